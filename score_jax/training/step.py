"""Jitted train steps: one policy and one reference forward over [x, y1, p, y2].

A batch is a dict of arrays over packed, right-padded traces:
  tokens (B,T) int32, valid (B,T) bool, y1_mask / y2_mask (B,T) bool (the tokens
  each turn generated), r1 / r2 (B,) float32 rewards           -- SCoRe steps
  tokens, valid, target_mask (B,T) bool                          -- SFT steps
The step functions are pure: (state, ref_params, batch) -> (state, metrics).
`compile_step` jits them with explicit in/out shardings on a mesh, donating the
state so parameters and optimizer moments update in place. An optional
`activation_sharding` (sharding.activation_sharding) constrains the residual
stream x_BTD at every layer boundary of both forwards.
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
from score_jax.models.transformer import causal_mask
from score_jax.training import sharding as sh
from score_jax.training.state import TrainState

STAGES = ('stage1', 'stage2', 'sft')


def forward_logits(graphdef: nnx.GraphDef, params: nnx.State, tokens_BT, valid_BT,
                   activation_sharding=None):
  """Logits of a packed batch (positions 0..T-1, causal + validity mask)."""
  b, t = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  model = nnx.merge(graphdef, params)
  logits_BTV, _ = model(tokens_BT, positions_BT, causal_mask(positions_BT, valid_BT),
                        activation_sharding=activation_sharding)
  return logits_BTV


def score_loss(params, ref_params, batch, *, graphdef, loss_cfg: losses.LossConfig,
               stage: str, activation_sharding=None):
  """Stage I or II loss of one batch; the reference forward carries no gradient."""
  tokens, valid = batch['tokens'], batch['valid']
  logits_BTV = forward_logits(graphdef, params, tokens, valid, activation_sharding)
  ref_logits_BTV = jax.lax.stop_gradient(
      forward_logits(graphdef, ref_params, tokens, valid, activation_sharding))
  logp_BT = losses.next_token_log_probs(logits_BTV, tokens)
  ref_logp_BT = losses.next_token_log_probs(ref_logits_BTV, tokens)
  if loss_cfg.kl_estimator == 'exact':
    kl_BT = losses.kl_exact(losses.shift_logits(logits_BTV), losses.shift_logits(ref_logits_BTV))
  else:
    kl_BT = losses.kl_sampled(logp_BT, ref_logp_BT, loss_cfg.kl_estimator)
  fn = losses.stage_one_loss if stage == 'stage1' else losses.stage_two_loss
  return fn(logp_BT, kl_BT, batch['y1_mask'], batch['y2_mask'], batch['r1'], batch['r2'],
            loss_cfg)


def sft_loss(params, ref_params, batch, *, graphdef, loss_cfg=None, stage='sft',
             activation_sharding=None):
  del ref_params, loss_cfg, stage
  logits_BTV = forward_logits(graphdef, params, batch['tokens'], batch['valid'],
                              activation_sharding)
  logp_BT = losses.next_token_log_probs(logits_BTV, batch['tokens'])
  return losses.sft_loss(logp_BT, batch['target_mask'])


def train_step(state: TrainState, ref_params: nnx.State, batch: dict, *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               loss_cfg: losses.LossConfig | None, stage: str,
               activation_sharding=None):
  """One optimizer update (or one accumulation micro-step under optax.MultiSteps)."""
  if stage not in STAGES:
    raise ValueError(f'stage {stage!r}; expected one of {STAGES}')
  loss_fn = sft_loss if stage == 'sft' else score_loss
  grad_fn = jax.value_and_grad(
      functools.partial(loss_fn, graphdef=graphdef, loss_cfg=loss_cfg, stage=stage,
                        activation_sharding=activation_sharding),
      has_aux=True)
  (_, metrics), grads = grad_fn(state.params, ref_params, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 update_norm=optax.global_norm(updates))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def batch_shardings(batch_example: dict, mesh: Mesh, rules: sh.Rules) -> dict:
  return {k: sh.batch_sharding(mesh, rules, jnp.ndim(v)) for k, v in batch_example.items()}


def compile_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                 loss_cfg: losses.LossConfig | None, stage: str, mesh: Mesh,
                 rules: sh.Rules, state_shardings: TrainState, ref_shardings,
                 batch_example: dict, activation_sharding=None) -> Callable:
  """jax.jit of train_step with explicit shardings; the state argument is donated.

  activation_sharding: None, or e.g. sh.activation_sharding(mesh, rules, (B, T, D))
  to constrain x_BTD at every layer boundary.
  """
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, loss_cfg=loss_cfg,
                           stage=stage, activation_sharding=activation_sharding)
  return jax.jit(
      step,
      in_shardings=(state_shardings, ref_shardings,
                    batch_shardings(batch_example, mesh, rules)),
      out_shardings=(state_shardings, NamedSharding(mesh, P())),
      donate_argnums=(0,))
