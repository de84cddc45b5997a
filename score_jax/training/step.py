"""Jitted train steps: one policy and one reference forward over [x, y1, p, y2].

A batch is one of batches.py's typed containers: ScoreBatch (Stage I / II),
SftBatch (supervised) or PairBatch (DPO).
The step functions are pure: (state, ref_params, batch) -> (state, metrics).
`compile_step` jits them with explicit in/out shardings on a mesh, donating the
state so parameters and optimizer moments update in place. An optional
`activation_sharding` (sharding.activation_sharding) constrains the residual
stream x_BTD at every layer boundary of both forwards.

SCoRe losses read log-probs and KL only at y1 and y2 tokens. With a static
`response_len` R (>= the y1 + y2 tokens of any row, e.g. max_y1_tokens +
max_y2_tokens) the hidden states predicting them are gathered into (B, R, D)
before the vocabulary projection, so the prompt and the instruction never meet
the unembedding; without it every position is scored.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from score_jax import losses
from score_jax.models import lora
from score_jax.models.transformer import MAX_LOGITS, causal_mask, token_stats
from score_jax.training import sharding as sh
from score_jax.batches import PairBatch, ScoreBatch, SftBatch
from score_jax.training.state import TrainState

STAGES = ('stage1', 'stage2', 'sft', 'dpo')
Batch = ScoreBatch | SftBatch | PairBatch


def forward_logits(graphdef: nnx.GraphDef, params: nnx.State, tokens_BT, valid_BT,
                   activation_sharding=None):
  """Logits of a packed batch (positions 0..T-1, causal + validity mask)."""
  model, h_BTD = _forward_hidden(graphdef, params, tokens_BT, valid_BT, activation_sharding)
  return model.logits(h_BTD)


def _forward_hidden(graphdef, params, tokens_BT, valid_BT, activation_sharding=None):
  b, t = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  model = nnx.merge(graphdef, params)
  h_BTD, _ = model.hidden(tokens_BT, positions_BT, causal_mask(positions_BT, valid_BT),
                          activation_sharding=activation_sharding)
  return model, h_BTD


def response_positions(target_BT: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """(idx_BR, real_BR): the indices of each row's first `num` target tokens, in
  order (padded with non-target indices, real_BR False there)."""
  order_BT = jnp.argsort(~target_BT, axis=1, stable=True)[:, :num]
  return order_BT.astype(jnp.int32), jnp.take_along_axis(target_BT, order_BT, axis=1)


def _next_token_stats(model, h_BTD, tokens_BT, ref_model=None, ref_h_BTD=None, *,
                      exact_kl: bool = False, max_logits: int = MAX_LOGITS,
                      target_BT: jax.Array | None = None, response_len: int | None = None):
  """Per token t, scored from position t-1 (0 at t = 0): log pi, and with a
  reference also log pi_ref and, if exact_kl, KL(pi || pi_ref) over the vocabulary.

  transformer.token_stats does the scoring, a slice of positions at a time (each
  slice recomputed in the backward pass), so neither pass holds more than the
  budget of B x T x V logits. With target_BT and a static response_len R, only
  the first R target tokens of each row are scored (0 elsewhere).
  Returns (logp_BT, ref_logp_BT | None, kl_BT | None).
  """
  with_ref = ref_model is not None
  stats = functools.partial(token_stats, model, ref_model=ref_model, exact_kl=exact_kl,
                            max_logits=max_logits, remat=True)
  if response_len is None:
    out = stats(h_BTD[:, :-1], tokens_BT[:, 1:],
                ref_h_BXD=ref_h_BTD[:, :-1] if with_ref else None)
    out = {k: jnp.pad(v, ((0, 0), (1, 0))) for k, v in out.items()}
  else:
    idx_BR, real_BR = response_positions(target_BT, response_len)
    src_BR1 = jnp.maximum(idx_BR - 1, 0)[..., None]   # token t is scored from t - 1
    gather = lambda h_BTD: jnp.take_along_axis(h_BTD, src_BR1, axis=1)
    out = stats(gather(h_BTD), jnp.take_along_axis(tokens_BT, idx_BR, 1),
                ref_h_BXD=gather(ref_h_BTD) if with_ref else None)
    rows_B1 = jnp.arange(tokens_BT.shape[0])[:, None]
    out = {k: jnp.zeros(tokens_BT.shape, v.dtype).at[rows_B1, idx_BR].add(
        jnp.where(real_BR, v, 0.0)) for k, v in out.items()}
  return out['logp'], out.get('ref_logp'), out.get('kl')


def score_loss(params, ref_params, batch: ScoreBatch, *, graphdef,
               loss_cfg: losses.LossConfig,
               stage: str, activation_sharding=None, max_logits: int = MAX_LOGITS,
               response_len: int | None = None):
  """Stage I or II loss of one batch; the reference forward carries no gradient.

  response_len (static): score only the first R y1/y2 tokens of each row (see the
  module docstring); metric 'response_tokens_cut' counts any beyond R (want 0).
  """
  tokens, valid = batch.tokens_BT, batch.valid_BT
  model, h_BTD = _forward_hidden(graphdef, params, tokens, valid, activation_sharding)
  ref_model, ref_h_BTD = _forward_hidden(graphdef, ref_params, tokens, valid,
                                         activation_sharding)
  exact = loss_cfg.kl_estimator == 'exact'
  target_BT = batch.y1_mask_BT | batch.y2_mask_BT
  logp_BT, ref_logp_BT, kl_BT = _next_token_stats(
      model, h_BTD, tokens, ref_model, ref_h_BTD, exact_kl=exact,
      max_logits=max_logits, target_BT=target_BT, response_len=response_len)
  if not exact:
    kl_BT = losses.kl_sampled(logp_BT, ref_logp_BT, loss_cfg.kl_estimator)
  fn = losses.stage_one_loss if stage == 'stage1' else losses.stage_two_loss
  loss, metrics = fn(logp_BT, kl_BT, batch.y1_mask_BT, batch.y2_mask_BT, batch.r1_B,
                     batch.r2_B, loss_cfg)
  if response_len is not None:
    cut_B = jnp.maximum(jnp.sum(target_BT, axis=1) - response_len, 0)
    metrics = dict(metrics, response_tokens_cut=jnp.sum(cut_B))
  return loss, metrics


def sft_step_loss(params, ref_params, batch: SftBatch, *, graphdef, loss_cfg=None,
                  stage='sft',
                  activation_sharding=None, max_logits: int = MAX_LOGITS,
                  response_len: int | None = None):
  """losses.sft_loss of the policy's log-probs at batch.target_mask_BT tokens."""
  del ref_params, loss_cfg, stage, response_len  # SFT targets are not y1/y2
  model, h_BTD = _forward_hidden(graphdef, params, batch.tokens_BT, batch.valid_BT,
                                 activation_sharding)
  logp_BT, _, _ = _next_token_stats(model, h_BTD, batch.tokens_BT, max_logits=max_logits)
  return losses.sft_loss(logp_BT, batch.target_mask_BT)


def dpo_step_loss(params, ref_params, batch: PairBatch, *, graphdef,
                  loss_cfg: losses.DPOConfig,
                  stage='dpo', activation_sharding=None, max_logits: int = MAX_LOGITS,
                  response_len: int | None = None):
  """DPO on sequence log-probs of the response tokens (chosen rows, then rejected)."""
  del stage, response_len  # every position is scored
  tokens, valid = batch.tokens_BT, batch.valid_BT
  model, h_BTD = _forward_hidden(graphdef, params, tokens, valid, activation_sharding)
  ref_model, ref_h_BTD = _forward_hidden(graphdef, ref_params, tokens, valid,
                                         activation_sharding)
  logp_BT, ref_logp_BT, _ = _next_token_stats(model, h_BTD, tokens, ref_model,
                                              ref_h_BTD, max_logits=max_logits)
  seq = lambda x_BT: jnp.sum(jnp.where(batch.response_mask_BT, x_BT, 0.0), axis=1)
  logp_B, ref_logp_B = seq(logp_BT), seq(ref_logp_BT)
  p = tokens.shape[0] // 2
  return losses.dpo_loss(logp_B[:p], logp_B[p:], ref_logp_B[:p], ref_logp_B[p:],
                         loss_cfg.beta, label_smoothing=loss_cfg.label_smoothing,
                         loss_type=loss_cfg.loss_type, weights_B=batch.weight_B[:p])


_LOSS_FNS = {'sft': sft_step_loss, 'dpo': dpo_step_loss}


def train_step(state: TrainState, ref_params: nnx.State, batch: Batch, *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               loss_cfg: losses.LossConfig | losses.DPOConfig | None, stage: str,
               activation_sharding=None, lora_scale: float | None = None,
               response_len: int | None = None):
  """One optimizer update (or one accumulation micro-step under optax.MultiSteps).

  lora_scale: state.params are LoRA adapters on the frozen base ref_params (the
  policy is models.lora.merge(ref_params, adapters), the reference the base).
  response_len (static): see score_loss.
  """
  if stage not in STAGES:
    raise ValueError(f'stage {stage!r}; expected one of {STAGES}')
  loss_fn = functools.partial(_LOSS_FNS.get(stage, score_loss), graphdef=graphdef,
                              loss_cfg=loss_cfg, stage=stage,
                              activation_sharding=activation_sharding,
                              response_len=response_len)
  if lora_scale is not None:
    loss_fn = lora.on_base(loss_fn, lora_scale)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, metrics), grads = grad_fn(state.params, ref_params, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 update_norm=optax.global_norm(updates))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def batch_shardings(batch_example, mesh: Mesh, rules: sh.Rules):
  """The batch's shardings: every field split by rows over the mesh's batch axes."""
  return jax.tree.map(lambda v: sh.batch_sharding(mesh, rules, jnp.ndim(v)), batch_example)


def compile_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                 loss_cfg: losses.LossConfig | None, stage: str, mesh: Mesh,
                 rules: sh.Rules, state_shardings: TrainState, ref_shardings,
                 batch_example: Batch, activation_sharding=None,
                 lora_scale: float | None = None,
                 response_len: int | None = None) -> Callable:
  """jax.jit of train_step with explicit shardings; the state argument is donated.

  activation_sharding: None, or e.g. sh.activation_sharding(mesh, rules, (B, T, D))
  to constrain x_BTD at every layer boundary. lora_scale: see train_step.
  response_len: see score_loss.
  """
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, loss_cfg=loss_cfg,
                           stage=stage, activation_sharding=activation_sharding,
                           lora_scale=lora_scale, response_len=response_len)
  return jax.jit(
      step,
      in_shardings=(state_shardings, ref_shardings,
                    batch_shardings(batch_example, mesh, rules)),
      out_shardings=(state_shardings, NamedSharding(mesh, P())),
      donate_argnums=(0,))
