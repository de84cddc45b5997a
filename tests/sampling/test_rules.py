"""Sampling rules against closed forms: softmax counts (chi-square), nucleus sets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.sampling import rules

_candidates = jax.jit(rules.candidates, static_argnums=(1, 2, 3))
_sample = jax.jit(rules.sample, static_argnames=('temperature', 'top_k', 'top_p'))


def draw(logits_V, n, seed=0, **rule):
  logits_BV = jnp.broadcast_to(jnp.asarray(logits_V, jnp.float32), (n, len(logits_V)))
  keys_B = rules.row_keys(jax.random.key(seed), n)
  tok_B, dist_lp_B = _sample(keys_B, logits_BV, **rule)
  return np.asarray(tok_B), np.asarray(dist_lp_B)


def softmax(x):
  e = np.exp(x - np.max(x))
  return e / e.sum()


def nucleus_reference(probs_V, top_p):
  """Smallest set of most likely tokens whose mass reaches top_p (numpy)."""
  order = np.argsort(-probs_V, kind='stable')
  mass = np.cumsum(probs_V[order])
  n = int(np.searchsorted(mass, top_p) + 1)   # first prefix with mass >= top_p
  return set(order[:min(n, len(order))].tolist())


LOGITS = np.array([1.2, -0.3, 0.5, 2.0, 0.0, -1.0, 0.9], np.float32)


def test_greedy_and_top_k_1_are_argmax():
  logits_BV = jax.random.normal(jax.random.key(0), (64, 50)) * 3
  keys_B = rules.row_keys(jax.random.key(1), 64)
  argmax_B = np.argmax(np.asarray(logits_BV), -1)
  greedy_B, lp0_B = _sample(keys_B, logits_BV, temperature=0.0)
  top1_B, lp1_B = _sample(keys_B, logits_BV, temperature=1.0, top_k=1)
  np.testing.assert_array_equal(greedy_B, argmax_B)
  np.testing.assert_array_equal(top1_B, argmax_B)
  np.testing.assert_array_equal(lp0_B, 0.0)
  np.testing.assert_allclose(lp1_B, 0.0, atol=1e-6)


@pytest.mark.parametrize('temperature', [0.7, 1.0, 1.6])
def test_temperature_matches_softmax(temperature, chi_square_p):
  n = 20_000
  tok_B, dist_lp_B = draw(LOGITS, n, temperature=temperature)
  probs = softmax(LOGITS / temperature)
  assert chi_square_p(np.bincount(tok_B, minlength=len(LOGITS)), probs) > 1e-3
  np.testing.assert_allclose(dist_lp_B, np.log(probs[tok_B]), atol=1e-5)


def test_top_k_draws_from_renormalised_top_k(chi_square_p):
  tok_B, dist_lp_B = draw(LOGITS, 20_000, seed=3, temperature=1.0, top_k=3)
  top = np.argsort(-LOGITS)[:3]
  probs = np.zeros(len(LOGITS))
  probs[top] = softmax(LOGITS[top])
  counts = np.bincount(tok_B, minlength=len(LOGITS))
  assert set(np.flatnonzero(counts)) == set(top)
  assert chi_square_p(counts[top], probs[top]) > 1e-3
  np.testing.assert_allclose(dist_lp_B, np.log(probs[tok_B]), atol=1e-5)


def test_top_p_keeps_exactly_the_nucleus():
  probs = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
  logits = np.log(probs).astype(np.float32)
  cases = ((0.65, {1, 3}), (0.75, {1, 3, 4}), (0.3, {1}), (1.0, set(range(5))))
  for top_p, nucleus in cases:
    cand_BK, ids_BK = _candidates(jnp.asarray(logits)[None], 1.0, None, top_p)
    kept = set(np.asarray(ids_BK)[0][np.isfinite(np.asarray(cand_BK)[0])].tolist())
    assert kept == nucleus, (top_p, kept)
  # Random rows and thresholds against a numpy reference.
  rng = np.random.default_rng(0)
  logits_BV = rng.normal(size=(200, 12)).astype(np.float32) * 2
  for top_p in (0.1, 0.5, 0.9, 0.99):
    cand_BK, ids_BK = _candidates(jnp.asarray(logits_BV), 1.0, None, top_p)
    for row, c, i in zip(logits_BV, np.asarray(cand_BK), np.asarray(ids_BK)):
      assert set(i[np.isfinite(c)].tolist()) == nucleus_reference(softmax(row), top_p)


def test_top_p_samples_the_renormalised_nucleus(chi_square_p):
  tok_B, dist_lp_B = draw(LOGITS, 20_000, seed=5, temperature=0.8, top_p=0.7)
  probs = softmax(LOGITS / 0.8)
  nucleus = sorted(nucleus_reference(probs, 0.7))
  counts = np.bincount(tok_B, minlength=len(LOGITS))
  assert set(np.flatnonzero(counts)) == set(nucleus)
  renorm = probs[nucleus] / probs[nucleus].sum()
  assert chi_square_p(counts[nucleus], renorm) > 1e-3
  np.testing.assert_allclose(dist_lp_B, np.log(probs[tok_B] / probs[nucleus].sum()),
                             atol=1e-5)


def test_same_key_same_samples_other_key_other_samples():
  a, _ = draw(LOGITS, 256, seed=7, temperature=1.0)
  b, _ = draw(LOGITS, 256, seed=7, temperature=1.0)
  c, _ = draw(LOGITS, 256, seed=8, temperature=1.0)
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.3


@pytest.mark.parametrize('rule', [dict(temperature=-1.0), dict(top_k=0),
                                  dict(top_k=2.5), dict(top_p=0.0), dict(top_p=1.5)])
def test_bad_rule_raises(rule):
  kw = dict(temperature=1.0, top_k=None, top_p=None) | rule
  with pytest.raises(ValueError, match='sampling:'):
    rules.check_rule(**kw)
