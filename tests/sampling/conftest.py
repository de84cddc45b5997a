"""Tiny randomly initialised Gemma models shared by the sampler tests."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.models import Transformer, causal_mask, create_model, get_preset



@pytest.fixture(scope='package', autouse=True)
def _fast_compiles():
  """These tests check semantics on ~40 small programs; XLA's optimisation passes
  would triple their compile time on a 2-core CPU. Restored afterwards."""
  old = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', old)


@functools.lru_cache(maxsize=None)
def _model(preset: str) -> Transformer:
  # Seed 1: its greedy paths let test_rollout.choose_stops cover every stop case.
  model = create_model(get_preset(preset), rngs=nnx.Rngs(1))
  # Gemma's init (std 0.01) gives near-uniform logits and std 1 a point mass on
  # the input token (the embedding is tied); std 0.1 gives peaked but varied
  # next-token distributions, so position or mask errors show in every check.
  emb = model.embedder.input_embedding
  emb[...] = 0.1 * jax.random.normal(jax.random.key(1), emb.shape, emb.dtype)
  return model


@pytest.fixture(scope='session')
def tiny_model():
  """tiny_model(preset) -> (model, graphdef, params)."""
  def get(preset):
    model = _model(preset)
    graphdef, params = nnx.split(model)
    return model, graphdef, params
  return get


@pytest.fixture(scope='session')
def full_forward():
  """full_forward(model, trace) -> (argmax_BT, logprob_BT) of each NEXT token.

  One uncached forward over the packed trace (positions = arange, mask = causal &
  valid); index t of the outputs scores tokens_BT[:, t + 1] (the last is 0).
  """
  def run(model, trace):
    tokens_BT, valid_BT = trace.tokens_BT, trace.valid_BT
    b, t = tokens_BT.shape
    pos_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
    logits_BTV, _ = model(tokens_BT, pos_BT, causal_mask(pos_BT, valid_BT))
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    nxt_BT = jnp.pad(tokens_BT[:, 1:], ((0, 0), (0, 1)))
    lp_BT = jnp.take_along_axis(logp_BTV, nxt_BT[..., None], axis=-1)[..., 0]
    return np.asarray(jnp.argmax(logits_BTV, -1)), np.asarray(lp_BT)
  return run


def _make_prompts(lengths, width, seed=0, holes=()):
  rng = np.random.default_rng(seed)
  ids = np.zeros((len(lengths), width), np.int32)
  mask = np.zeros((len(lengths), width), bool)
  for b, n in enumerate(lengths):
    ids[b, :n] = rng.integers(3, 256, n)
    ids[b, 0] = 2
    mask[b, :n] = n > 0
  for b, c in holes:
    mask[b, c] = False
  return ids, mask


@pytest.fixture(scope='session')
def make_prompts():
  """make_prompts(lengths, width, seed, holes) -> right-padded (ids_BP, mask_BP).

  Random ids after bos=2; rows of length 0 are batch padding; holes: (row, col)
  pairs masked out inside a prompt.
  """
  return _make_prompts


def _chi_square_p(counts, probs):
  counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
  expected = counts.sum() * probs
  big = expected >= 5
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  obs, exp = obs[exp > 0], exp[exp > 0]
  stat = np.sum((obs - exp) ** 2 / exp)
  return float(jax.scipy.special.gammaincc((len(obs) - 1) / 2, stat / 2))


@pytest.fixture(scope='session')
def chi_square_p():
  """chi_square_p(counts, probs): p-value of a chi-square goodness-of-fit test
  (bins expecting < 5 draws are merged into one)."""
  return _chi_square_p
