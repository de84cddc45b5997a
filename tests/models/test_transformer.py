"""The transformer's execution options agree with its plain float32 forward.

Parity with the reference implementation lives in test_hf_parity.py; here the
reference is our own float32, scanned, non-remat full forward: cached decoding
under jit with the cache donated, bfloat16 compute, remat policies and an
unrolled layer loop must all reproduce it.
"""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.models import Transformer, causal_mask, get_preset, init_cache
from score_jax.models.transformer import REMAT_POLICIES, token_stats
from score_jax.sampling import decode

T = 14  # > sliding_window (8)


@pytest.fixture(scope='module')
def setup(random_model):
  cfg = get_preset('gemma3_tiny')
  model = random_model(cfg)
  tokens_BT = np.random.RandomState(0).randint(1, cfg.vocab_size, (2, T)).astype(np.int32)
  valid_BT = np.ones((2, T), bool)
  valid_BT[1, :4] = False  # left padding
  positions_BT = np.where(valid_BT, np.cumsum(valid_BT, 1) - 1, 0).astype(np.int32)
  _, state = nnx.split(model)
  return cfg, state, (tokens_BT, positions_BT, valid_BT)


def _graphdef(cfg):
  return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))[0]


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, tokens_BT, positions_BT, valid_BT):
  logits_BTV, _ = nnx.merge(graphdef, state)(tokens_BT, positions_BT,
                                             causal_mask(positions_BT, valid_BT))
  return logits_BTV


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_grads(graphdef, state, tokens_BT, positions_BT, valid_BT):
  def loss_fn(state):
    logits_BTV = _logits(graphdef, state, tokens_BT, positions_BT, valid_BT)
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32))
    nll_BT = -jnp.take_along_axis(logp_BTV[:, :-1], tokens_BT[:, 1:, None], -1)[..., 0]
    w_BT = (valid_BT[:, :-1] & valid_BT[:, 1:]).astype(jnp.float32)
    return jnp.sum(nll_BT * w_BT) / jnp.sum(w_BT)
  return jax.value_and_grad(loss_fn)(state)


def test_cached_decode_under_jit_with_donated_cache(setup):
  cfg, state, (tokens_BT, positions_BT, valid_BT) = setup
  graphdef = _graphdef(cfg)
  ref_BTV = np.asarray(_logits(graphdef, state, tokens_BT, positions_BT, valid_BT))

  @functools.partial(jax.jit, donate_argnames='cache')
  def step(state, tokens_BT, positions_BT, mask_BTS, cache, cache_index):
    return nnx.merge(graphdef, state)(tokens_BT, positions_BT, mask_BTS, cache=cache,
                                      cache_index=cache_index)

  num_slots, prefill = T + 2, 6
  valid_BS = np.zeros((2, num_slots), bool)
  valid_BS[:, :T] = valid_BT
  cache = init_cache(cfg, 2, num_slots)
  logits = []
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # 'donated buffers were not usable' fails the test
    for start, stop in [(0, prefill)] + [(t, t + 1) for t in range(prefill, T)]:
      q_T = np.arange(start, stop)
      mask_BTS = valid_BS[:, None, :] & (np.arange(num_slots)[None, None] <= q_T[None, :, None])
      old = cache
      logits_BTV, cache = step(state, tokens_BT[:, start:stop],
                               positions_BT[:, start:stop], mask_BTS, cache,
                               jnp.int32(start))
      assert all(x.is_deleted() for x in jax.tree.leaves(old)), 'cache was not donated'
      logits.append(np.asarray(logits_BTV))
  assert step._cache_size() == 2  # one prefill and one decode program, any cache_index
  diff = np.abs(np.concatenate(logits, 1) - ref_BTV)[valid_BT].max()
  assert diff <= 1e-4, diff
  assert np.array_equal(np.asarray(cache.pos_BS)[:, :T], positions_BT)


@pytest.mark.parametrize('param_dtype', ['float32', 'bfloat16'])
def test_bfloat16_compute_stays_close_to_float32(setup, param_dtype):
  cfg, state, (tokens_BT, positions_BT, valid_BT) = setup
  ref_BTV = np.asarray(_logits(_graphdef(cfg), state, tokens_BT, positions_BT, valid_BT))
  cfg16 = cfg.replace(dtype='bfloat16', param_dtype=param_dtype)
  state16 = jax.tree.map(lambda x: x.astype(cfg16.jnp_param_dtype), state)
  out_BTV = _logits(_graphdef(cfg16), state16, tokens_BT, positions_BT, valid_BT)
  assert out_BTV.dtype == jnp.bfloat16
  out_BTV = np.asarray(out_BTV.astype(jnp.float32))
  assert np.isfinite(out_BTV).all()
  scale = np.abs(ref_BTV[valid_BT]).max()
  err = np.abs(out_BTV - ref_BTV)[valid_BT]
  # bf16 has 8 bits of mantissa (~0.4% per rounding); six layers of it.
  assert err.max() <= 0.05 * scale, (err.max(), scale)
  assert err.mean() <= 0.01 * scale, (err.mean(), scale)
  agree = (out_BTV.argmax(-1) == ref_BTV.argmax(-1))[valid_BT].mean()
  assert agree >= 0.9, agree


@pytest.mark.parametrize('policy', sorted(set(REMAT_POLICIES) - {'none'}))
def test_remat_policy_gives_same_logits_and_grads(setup, policy):
  cfg, state, batch = setup
  loss, grads = _loss_and_grads(_graphdef(cfg), state, *batch)
  loss_r, grads_r = _loss_and_grads(_graphdef(cfg.replace(remat=policy)), state, *batch)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  for g_r, g in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
    np.testing.assert_allclose(g_r, g, rtol=1e-5, atol=1e-6 * np.abs(g).max())


def test_unrolled_layers_match_scan(setup):
  cfg, state, batch = setup
  ref_BTV = _logits(_graphdef(cfg), state, *batch)
  out_BTV = _logits(_graphdef(cfg.replace(scan_layers=False)), state, *batch)
  np.testing.assert_allclose(out_BTV, ref_BTV, atol=1e-5)


def test_unknown_remat_policy_is_a_clear_error():
  with pytest.raises(ValueError, match="remat='everything'.*dots_no_batch"):
    Transformer(get_preset('gemma_tiny', remat='everything'), rngs=nnx.Rngs(0))


@pytest.mark.parametrize('preset', ['gemma2_tiny', 'gemma3_tiny'])
@pytest.mark.parametrize('max_logits', [3 * 2 * 256, 10**9])  # 3-position chunks; one
def test_token_stats_equal_the_full_log_softmax(random_model, preset, max_logits):
  cfg = get_preset(preset)  # gemma2_tiny soft-caps its logits
  model = random_model(cfg)
  rng = np.random.RandomState(1)
  tokens_BT = rng.randint(1, cfg.vocab_size, (2, T)).astype(np.int32)
  targets_BT = rng.randint(0, cfg.vocab_size, (2, T)).astype(np.int32)
  positions_BT = np.tile(np.arange(T, dtype=np.int32), (2, 1))
  mask_BTS = causal_mask(positions_BT, np.ones((2, T), bool))
  logits_BTV, _ = model(tokens_BT, positions_BT, mask_BTS)
  want_BT = np.take_along_axis(
      np.asarray(jax.nn.log_softmax(logits_BTV.astype(jnp.float32))), targets_BT[..., None],
      -1)[..., 0]
  h_BTD, _ = model.hidden(tokens_BT, positions_BT, mask_BTS)
  got_BT = token_stats(model, h_BTD, targets_BT, max_logits=max_logits)['logp']
  np.testing.assert_allclose(got_BT, want_BT, atol=1e-5)


def test_prefill_never_holds_all_logits():
  """Compiled prefill scratch stays far below B x T x V float32 logits."""
  cfg = get_preset('gemma3_tiny', vocab_size=65_536, num_layers=1)
  b, t = 4, 1024
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  tokens_BT = jax.ShapeDtypeStruct((b, t), jnp.int32)
  mask_BT = jax.ShapeDtypeStruct((b, t), jnp.bool_)
  compiled = jax.jit(decode.prefill, static_argnums=(0, 4)).lower(
      graphdef, state, tokens_BT, mask_BT, t).compile()
  all_logits = b * t * cfg.vocab_size * 4
  # The default budget is 2**26 float32 logits (256 MiB) at a time, a quarter of 1 GiB.
  assert compiled.memory_analysis().temp_size_in_bytes < 0.5 * all_logits
