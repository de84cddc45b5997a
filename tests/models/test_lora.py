"""LoRA adapters (score_jax.models.lora) on a tiny model, against hand computations.

The merge is checked against a per-layer numpy matrix product; the train step
against the chain rule (dL/dB = scale * A^T dL/dW) and against a reference loss
built from full logits of the merged policy and of the base (the reference).
"""
import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from score_jax import losses
from score_jax.batches import ScoreBatch, SftBatch
from score_jax.models import Transformer, create_model, get_preset, lora
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from tests.training import full_logits

B, T = 4, 12


def _flat(state):
  return {'/'.join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def _nonzero(adapters, seed=0):
  """Adapters with B drawn too (fresh ones have B = 0)."""
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda x: x + 0.05 * rng.randn(*x.shape).astype(x.dtype), adapters)


@pytest.fixture(scope='module', name='setup')
def setup_fixture():
  cfg = get_preset('gemma3_tiny', vocab_size=64, num_layers=2)
  graphdef, base = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.RandomState(0)
  valid = np.arange(T)[None, :] < np.array([12, 10, 9, 11])[:, None]
  batch = {'tokens': np.where(valid, rng.randint(4, 64, (B, T)), 0).astype(np.int32),
           'valid': valid, 'y1_mask': (np.arange(T) >= 4)[None] & (np.arange(T) < 7)[None],
           'y2_mask': (np.arange(T) >= 8)[None] & valid,
           'r1': np.array([0., 1., 0., 1.], np.float32),
           'r2': np.array([1., 1., 0., 0.], np.float32)}
  batch['y1_mask'] = np.broadcast_to(batch['y1_mask'], (B, T)).copy()
  batch = ScoreBatch(batch['tokens'], batch['valid'], batch['y1_mask'], batch['y2_mask'],
                     batch['r1'], batch['r2'])
  cfg_lora = lora.LoraConfig(rank=3, alpha=6.0)
  return graphdef, base, batch, cfg_lora


def test_fresh_adapters_merge_to_the_base_bit_for_bit(setup):
  _, base, _, cfg = setup
  adapters = lora.init(base, cfg, jax.random.key(0))
  assert sorted(_flat(adapters)) == sorted(
      f'layers/{t}/{ab}' for t in lora.TARGETS
      if t not in ('attn/qkv_einsum/w', 'attn/k_einsum/w') for ab in 'ab')
  merged, want = _flat(lora.merge(base, adapters, cfg.scale)), _flat(base)
  assert merged.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(merged[k], want[k])


def _check_low_rank(merged, ad, w, cfg, name, in_axes):
  """merged[name] == W + scale * A @ B, layer by layer, as numpy matrices."""
  a, b, w0 = ad[f'{name}/a'], ad[f'{name}/b'], w[name]
  out_axes = [i for i in range(1, w0.ndim) if i not in in_axes]
  for layer in range(w0.shape[0]):
    # W as an (in, out) matrix, updated by A (in, r) @ B (r, out), then laid back out.
    perm = list(in_axes) + out_axes
    w_mat = np.transpose(w0[layer], [i - 1 for i in perm])
    shape = w_mat.shape
    upd = w_mat.reshape(a[layer].reshape(-1, cfg.rank).shape[0], -1) + cfg.scale * (
        a[layer].reshape(-1, cfg.rank) @ b[layer].reshape(cfg.rank, -1))
    want = np.transpose(upd.reshape(shape), np.argsort([i - 1 for i in perm]))
    np.testing.assert_allclose(merged[name][layer], want, rtol=1e-5, atol=1e-6)


def test_merge_is_the_per_layer_low_rank_product(setup):
  _, base, _, cfg = setup
  adapters = _nonzero(lora.init(base, cfg, jax.random.key(0)))
  merged, ad, w = _flat(lora.merge(base, adapters, cfg.scale)), _flat(adapters), _flat(base)
  for target, in_axes in lora.TARGETS.items():
    name = f'layers/{target}'
    if name in w:
      _check_low_rank(merged, ad, w, cfg, name, in_axes)
  for k in w:   # everything not adapted is the base
    if not any(k == f'layers/{t}' for t in lora.TARGETS):
      np.testing.assert_array_equal(merged[k], w[k])


def test_gemma4_stacks_are_adapted_per_layer_kind():
  """Gemma 4 keeps one stack per layer kind: every kind's targets get adapters,
  incl. the k == v layers' k_einsum; MoE, PLE and norms stay the base. Its weights
  are stored (in, out) like Gemma 1-3's, so the same TARGETS input axes apply."""
  cfg = lora.LoraConfig(rank=2, alpha=4.0)
  model_cfg = get_preset('gemma4_tiny')
  _, base = nnx.split(nnx.eval_shape(lambda: create_model(model_cfg, rngs=nnx.Rngs(0))))
  base = jax.tree.map(lambda x: np.random.RandomState(0).randn(*x.shape).astype(x.dtype),
                      base)
  adapters = _nonzero(lora.init(base, cfg, jax.random.key(0)))
  merged, ad, w = _flat(lora.merge(base, adapters, cfg.scale)), _flat(adapters), _flat(base)
  adapted = {k.rsplit('/', 1)[0] for k in ad}
  assert {'layers_global/attn/k_einsum/w', 'layers_local/attn/kv_einsum/w',
          'layers_global_shared/attn/q_einsum/w', 'layers_local_shared/mlp/linear'} <= adapted
  assert not any('kv_einsum' in k for k in adapted if '_shared/' in k)  # none to adapt
  d, n, f = model_cfg.embed_dim, model_cfg.num_heads, model_cfg.hidden_dim
  for name in adapted:
    target = name.split('/', 1)[1]
    in_axes = lora.TARGETS[target]
    in_shape = tuple(w[name].shape[i] for i in in_axes)
    if target == 'attn/attn_vec_einsum/w':
      assert in_shape[0] == n and w[name].shape[-1] == d, (name, w[name].shape)
    else:  # the input axis right after the layers axis
      assert in_shape[0] == (f * (2 if '_shared/' in name else 1) if target == 'mlp/linear'
                             else d), (name, w[name].shape)
    _check_low_rank(merged, ad, w, cfg, name, in_axes)
  for k in w:
    if k not in adapted:
      np.testing.assert_array_equal(merged[k], w[k])


def test_lora_loss_is_merged_policy_against_base_reference(setup):
  graphdef, base, batch, cfg = setup
  adapters = _nonzero(lora.init(base, cfg, jax.random.key(1)))
  loss_cfg = losses.LossConfig(beta1=0.3, alpha=5.0, kl_estimator='k3', baseline='batch_mean')
  fn = lora.on_base(functools.partial(step_lib.score_loss, graphdef=graphdef,
                                      loss_cfg=loss_cfg, stage='stage2'), cfg.scale)
  got_loss, got = fn(adapters, base, batch)
  # The textbook way: full logits of the merged policy and of the base.
  policy = lora.merge(base, adapters, cfg.scale)
  logp = full_logits.next_token_log_probs(
      step_lib.forward_logits(graphdef, policy, batch.tokens_BT, batch.valid_BT),
      batch.tokens_BT)
  ref_logp = full_logits.next_token_log_probs(
      step_lib.forward_logits(graphdef, base, batch.tokens_BT, batch.valid_BT),
      batch.tokens_BT)
  kl = losses.kl_sampled(logp, ref_logp, 'k3')
  want_loss, want = losses.stage_two_loss(logp, kl, batch.y1_mask_BT, batch.y2_mask_BT,
                                          batch.r1_B, batch.r2_B, loss_cfg)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  assert float(got['y2/kl']) > 1e-6   # the adapters moved the policy off the base
  np.testing.assert_allclose(got['y2/kl'], want['y2/kl'], rtol=1e-4)


def test_gradient_reaches_the_adapters_by_the_chain_rule(setup):
  graphdef, base, batch, cfg = setup
  adapters = lora.init(base, cfg, jax.random.key(2))   # B = 0: W' = W
  loss = functools.partial(step_lib.sft_step_loss, graphdef=graphdef)
  batch = SftBatch(batch.tokens_BT, batch.valid_BT, batch.y2_mask_BT)
  g_ad = jax.grad(lambda ad: lora.on_base(loss, cfg.scale)(ad, base, batch)[0])(adapters)
  g_w = jax.grad(lambda p: loss(p, None, batch)[0])(base)
  a = _flat(adapters)['layers/mlp/linear/a']              # L F r
  g_lin = _flat(g_w)['layers/mlp/linear']                  # L F D
  want_b = cfg.scale * np.einsum('lfr,lfd->lrd', a, g_lin)
  np.testing.assert_allclose(_flat(g_ad)['layers/mlp/linear/b'], want_b, rtol=1e-4,
                             atol=1e-7)
  np.testing.assert_array_equal(_flat(g_ad)['layers/mlp/linear/a'], 0.0)   # dA ~ B = 0


def test_two_lora_steps_change_adapters_and_leave_the_base(setup):
  graphdef, base, batch, cfg = setup
  base_before = _flat(base)
  adapters = lora.init(base, cfg, jax.random.key(3))
  start = _flat(adapters)
  tx = optax.adam(1e-2)
  state = state_lib.TrainState(step=np.int32(0), params=adapters,
                               opt_state=tx.init(adapters), rng=np.zeros(2, np.uint32))
  loss_cfg = losses.LossConfig(kl_estimator='k3', baseline='batch_mean')
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=graphdef, tx=tx,
                                   loss_cfg=loss_cfg, stage='stage1',
                                   lora_scale=cfg.scale))
  for _ in range(2):
    state, metrics = step(state, base, batch)
  assert np.isfinite(float(metrics['loss']))
  after = _flat(state.params)
  assert after.keys() == start.keys()   # the optimizer holds adapters only
  assert all(not np.array_equal(after[k], start[k]) for k in start)
  for k, v in _flat(base).items():
    np.testing.assert_array_equal(v, base_before[k])


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match='config.lora.targets'):
    lora.LoraConfig(rank=2, targets=('mlp/nope',))
  with pytest.raises(ValueError, match='config.lora.rank'):
    lora.LoraConfig(rank=-1)
