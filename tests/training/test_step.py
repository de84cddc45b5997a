"""The train step's losses scored a slice of positions at a time equal the plain formulation.

The reference builds all B x T x V logits with forward_logits and applies the
loss functions of score_jax.losses to them directly, the textbook way.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from score_jax import losses
from score_jax.batches import ScoreBatch, SftBatch
from score_jax.models import Transformer, get_preset
from score_jax.training import step as step_lib
from tests.training import full_logits

B, T = 4, 13


@pytest.fixture(scope='module')
def setup():
  cfg = get_preset('gemma2_tiny', num_layers=2)  # soft-capped logits
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  _, ref_params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(1)))
  rng = np.random.RandomState(0)
  lengths = np.array([13, 11, 9, 12])
  valid = np.arange(T)[None, :] < lengths[:, None]
  y1 = (np.arange(T)[None, :] >= 4) & (np.arange(T)[None, :] < 7)
  y2 = (np.arange(T)[None, :] >= 8) & valid
  batch = {'tokens': np.where(valid, rng.randint(1, cfg.vocab_size, (B, T)), 0).astype(np.int32),
           'valid': valid, 'y1_mask': y1, 'y2_mask': y2, 'target_mask': y2,
           'r1': np.array([0., 1., 0., 1.], np.float32),
           'r2': np.array([1., 1., 0., 0.], np.float32)}
  return graphdef, params, ref_params, batch


def _reference_loss(params, ref_params, batch, *, graphdef, loss_cfg, stage):
  logits = step_lib.forward_logits(graphdef, params, batch['tokens'], batch['valid'])
  logp = full_logits.next_token_log_probs(logits, batch['tokens'])
  if stage == 'sft':
    return losses.sft_loss(logp, batch['target_mask'])
  ref_logits = jax.lax.stop_gradient(
      step_lib.forward_logits(graphdef, ref_params, batch['tokens'], batch['valid']))
  ref_logp = full_logits.next_token_log_probs(ref_logits, batch['tokens'])
  kl = losses.kl_per_token(loss_cfg, logp, ref_logp, full_logits.shift_logits(logits),
                           full_logits.shift_logits(ref_logits))
  fn = losses.stage_one_loss if stage == 'stage1' else losses.stage_two_loss
  return fn(logp, kl, batch['y1_mask'], batch['y2_mask'], batch['r1'], batch['r2'], loss_cfg)


@pytest.mark.parametrize('stage, kl, response_len', [
    ('stage1', 'exact', None), ('stage2', 'exact', None), ('stage2', 'k3', None),
    ('sft', 'exact', None),
    # Only the y1/y2 tokens scored: at most 3 + 5 = 8 per row (R = 8: 3 slices).
    ('stage1', 'exact', 8), ('stage2', 'exact', 8), ('stage2', 'k1', 8)])
def test_chunked_loss_and_grads_equal_full_logits(setup, stage, kl, response_len):
  graphdef, params, ref_params, batch = setup
  cfg = losses.LossConfig(beta1=0.3, alpha=5.0, kl_estimator=kl, baseline='batch_mean')
  chunked = step_lib.sft_step_loss if stage == 'sft' else step_lib.score_loss
  # 3 positions per slice (B * 3 * V logits): 12 predicted positions -> 4 slices.
  got_fn = functools.partial(chunked, graphdef=graphdef, loss_cfg=cfg, stage=stage,
                             max_logits=B * 3 * 256, response_len=response_len)
  want_fn = functools.partial(_reference_loss, graphdef=graphdef, loss_cfg=cfg, stage=stage)
  typed = (SftBatch(batch['tokens'], batch['valid'], batch['target_mask']) if stage == 'sft'
           else ScoreBatch(batch['tokens'], batch['valid'], batch['y1_mask'], batch['y2_mask'],
                           batch['r1'], batch['r2']))
  (got, got_m), got_g = jax.jit(jax.value_and_grad(got_fn, has_aux=True))(params, ref_params, typed)
  (want, want_m), want_g = jax.jit(jax.value_and_grad(want_fn, has_aux=True))(
      params, ref_params, batch)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if response_len is not None:
    assert int(got_m['response_tokens_cut']) == 0
  for k in want_m:
    np.testing.assert_allclose(got_m[k], want_m[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # float32 sums over slices vs over the full vocabulary: seen 2.2e-6 on a gradient
  # entry of -7.5e-3 (jax 0.12); a wrong slice would move gradients by ~1e-2.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               got_g, want_g)


def test_train_step_never_holds_all_logits():
  """With slices of 16 MiB of logits, the compiled Stage II step's scratch stays
  below one copy of all B x T x V logits (the unsliced step needed six)."""
  cfg = get_preset('gemma3_tiny', vocab_size=65_536, num_layers=1)
  b, t = 4, 512
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  tx = optax.sgd(0.1)
  state = {'params': params, 'opt': jax.eval_shape(tx.init, params)}
  mask = jax.ShapeDtypeStruct((b, t), jnp.bool_)
  reward = jax.ShapeDtypeStruct((b,), jnp.float32)
  batch = ScoreBatch(jax.ShapeDtypeStruct((b, t), jnp.int32), mask, mask, mask, reward, reward)
  loss_cfg = losses.LossConfig(beta1=0.1, alpha=10.0, kl_estimator='exact',
                               baseline='batch_mean')

  def step(state, ref_params, batch):
    grads, _ = jax.grad(functools.partial(step_lib.score_loss, graphdef=graphdef,
                                          loss_cfg=loss_cfg, stage='stage2',
                                          max_logits=1 << 22),
                        has_aux=True)(state['params'], ref_params, batch)
    updates, opt = tx.update(grads, state['opt'], state['params'])
    return {'params': optax.apply_updates(state['params'], updates), 'opt': opt}

  compiled = jax.jit(step).lower(state, params, batch).compile()
  all_logits = b * t * cfg.vocab_size * 4   # 512 MiB
  assert compiled.memory_analysis().temp_size_in_bytes < all_logits
