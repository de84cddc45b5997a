"""Our Gemma 1/2/3 against Hugging Face transformers' own implementation.

The reference is transformers' GemmaForCausalLM / Gemma2ForCausalLM /
Gemma3ForCausalLM (CPU torch, float32, eager attention) holding the same random
weights (conftest.make_random_model), copied by score_jax.models.hf_convert.
Every norm scale is random, so the (1 + scale) norms are exercised; the batch
mixes a full row, a left-padded and a right-padded row (attention_mask and explicit position_ids go to HF) and is
longer than the sliding window. We compare logits at valid positions for the
full forward and for cached decoding (prefill, then one token at a time), and
check that the inputs are sensitive to each feature: a model with one feature
changed misses the reference by far more than the tolerance.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.models import Transformer, causal_mask, get_preset, init_cache
from score_jax.models import hf_convert

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

ATOL = 1e-4
T = 20          # > sliding_window (8) of the tiny Gemma 2/3 presets
PREFILL = 9     # prompt length of the cached-decode check
EXTRA_SLOTS = 3  # cache slots never written: they must be ignored

CONFIGS = {
    # Gemma 1: multi-query (N=4, K=1) and multi-head (N=K=4: fused qkv_einsum).
    'gemma_mqa': get_preset('gemma_tiny'),
    'gemma_mha': get_preset('gemma_tiny').replace(name='gemma_tiny_mha', num_kv_heads=4),
    # Gemma 2: GQA (4/2), local/global, attention and final soft-caps,
    # query_pre_attn_scalar=24 != head_dim=16.
    'gemma2': get_preset('gemma2_tiny'),
    # Gemma 3: GQA, 5 local : 1 global, qk-norm, global RoPE base 1M with linear
    # scaling 8, local base 10k, query_pre_attn_scalar=24 != head_dim=16.
    'gemma3': get_preset('gemma3_tiny'),
}
HF_CLASSES = {'gemma': 'GemmaForCausalLM', 'gemma2': 'Gemma2ForCausalLM',
              'gemma3_text': 'Gemma3ForCausalLM'}
QK_GAIN = 3.0  # q/k weights x3: attention logits reach Gemma 2's soft-cap of 50


def _batch(vocab_size):
  """Row 0 full, row 1 left-padded by 5, row 2 right-padded by 7 (pads: token 0, pos 0)."""
  tokens_BT = np.random.RandomState(0).randint(1, vocab_size, (3, T)).astype(np.int32)
  valid_BT = np.zeros((3, T), bool)
  valid_BT[0] = True
  valid_BT[1, 5:] = True
  valid_BT[2, :T - 7] = True
  positions_BT = np.where(valid_BT, np.cumsum(valid_BT, axis=1) - 1, 0).astype(np.int32)
  tokens_BT = np.where(valid_BT, tokens_BT, 0)
  return tokens_BT, positions_BT, valid_BT


def _hf_logits(cfg, model, tokens_BT, positions_BT, valid_BT):
  hf_cls = getattr(transformers, HF_CLASSES[hf_convert.hf_model_type(cfg)])
  hf_model = hf_cls(hf_convert.hf_config(cfg, attn_implementation='eager')).eval()
  sd = hf_convert.params_to_hf_state_dict(cfg, model)
  missing, unexpected = hf_model.load_state_dict(
      {k: torch.tensor(v) for k, v in sd.items()}, strict=False)
  assert list(missing) == ['lm_head.weight'] and not unexpected, (missing, unexpected)
  assert torch.equal(hf_model.lm_head.weight, hf_model.model.embed_tokens.weight)  # tied
  with torch.no_grad():
    out = hf_model(input_ids=torch.from_numpy(tokens_BT).long(),
                   attention_mask=torch.from_numpy(valid_BT).long(),
                   position_ids=torch.from_numpy(positions_BT).long())
  return out.logits.numpy()


@functools.partial(jax.jit, static_argnums=0)
def _full_forward(graphdef, state, tokens_BT, positions_BT, valid_BT):
  model = nnx.merge(graphdef, state)
  logits_BTV, _ = model(tokens_BT, positions_BT, causal_mask(positions_BT, valid_BT))
  return logits_BTV


@functools.partial(jax.jit, static_argnums=0)
def _cached_step(graphdef, state, tokens_BT, positions_BT, mask_BTS, cache, cache_index):
  return nnx.merge(graphdef, state)(tokens_BT, positions_BT, mask_BTS, cache=cache,
                                    cache_index=cache_index)


def _cached_decode(model, tokens_BT, positions_BT, valid_BT):
  """Prefill PREFILL tokens, then decode the rest one at a time; all logits (B, T, V)."""
  cfg = model.cfg
  graphdef, state = nnx.split(model)
  b, num_slots = tokens_BT.shape[0], T + EXTRA_SLOTS
  cache = init_cache(cfg, b, num_slots)
  valid_BS = np.zeros((b, num_slots), bool)
  valid_BS[:, :T] = valid_BT  # slot s holds token s

  def mask(start, stop):  # (B, stop-start, S): valid key slot, not after the query slot
    q_T = np.arange(start, stop)
    return valid_BS[:, None, :] & (np.arange(num_slots)[None, None, :] <= q_T[None, :, None])

  chunks = [(0, PREFILL)] + [(t, t + 1) for t in range(PREFILL, T)]
  logits = []
  for start, stop in chunks:
    logits_BTV, cache = _cached_step(graphdef, state, tokens_BT[:, start:stop],
                                     positions_BT[:, start:stop], mask(start, stop),
                                     cache, jnp.int32(start))
    logits.append(np.asarray(logits_BTV))
  return np.concatenate(logits, axis=1)


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def case(request, random_model):
  cfg = CONFIGS[request.param]
  model = random_model(cfg, qk_gain=QK_GAIN)
  batch = _batch(cfg.vocab_size)
  return cfg, model, batch, _hf_logits(cfg, model, *batch)


def _max_diff(ours_BTV, ref_BTV, valid_BT):
  return float(np.abs(np.asarray(ours_BTV) - ref_BTV)[valid_BT].max())


def test_full_forward_matches_hf(case):
  cfg, model, (tokens_BT, positions_BT, valid_BT), ref_BTV = case
  graphdef, state = nnx.split(model)
  ours_BTV = _full_forward(graphdef, state, tokens_BT, positions_BT, valid_BT)
  diff = _max_diff(ours_BTV, ref_BTV, valid_BT)
  print(f'{cfg.name}: full forward max |logit diff| = {diff:.2e} '
        f'(max |logit| {np.abs(ref_BTV[valid_BT]).max():.1f})')
  assert diff <= ATOL


def test_cached_decode_matches_hf(case):
  cfg, model, (tokens_BT, positions_BT, valid_BT), ref_BTV = case
  ours_BTV = _cached_decode(model, tokens_BT, positions_BT, valid_BT)
  diff = _max_diff(ours_BTV, ref_BTV, valid_BT)
  print(f'{cfg.name}: cached decode max |logit diff| = {diff:.2e}')
  assert diff <= ATOL


def _mutations(cfg):
  """Config changes the batch must detect (each alone is a plausible port bug).

  One compile each, so each generation checks what only it (or it first) has.
  """
  muts = {}
  if cfg.sliding_window:
    muts['sliding_window'] = cfg.replace(sliding_window=cfg.sliding_window + 1)
  if cfg.attn_logits_softcap:
    muts['attn_logits_softcap'] = cfg.replace(attn_logits_softcap=None)
  if cfg.final_logit_softcap:
    muts['final_logit_softcap'] = cfg.replace(final_logit_softcap=None)
  if cfg.use_qk_norm:  # Gemma 3
    muts['query_pre_attn_scalar'] = cfg.replace(query_pre_attn_scalar=None)
    muts['rope_scale_global'] = cfg.replace(rope_scale_global=1.0)
    muts['rope_base_local'] = cfg.replace(rope_base_local=cfg.rope_base_global)
  if not muts:  # Gemma 1
    muts['rope_base_global'] = cfg.replace(rope_base_global=2 * cfg.rope_base_global)
  return muts


def test_batch_is_sensitive_to_every_feature(case):
  """The parity above means something: each feature moves the logits by >> ATOL."""
  cfg, model, (tokens_BT, positions_BT, valid_BT), ref_BTV = case
  _, state = nnx.split(model)
  for field, mutated in _mutations(cfg).items():
    graphdef, _ = nnx.split(nnx.eval_shape(lambda c=mutated: Transformer(c, rngs=nnx.Rngs(0))))
    ours_BTV = _full_forward(graphdef, state, tokens_BT, positions_BT, valid_BT)
    diff = _max_diff(ours_BTV, ref_BTV, valid_BT)
    print(f'{cfg.name}: {field} changed -> max |logit diff| {diff:.3g}')
    assert diff > 100 * ATOL, f'{cfg.name}: changing {field} moved logits by only {diff}'
