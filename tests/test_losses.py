"""Loss tests against hand-derived values and direct numpy computations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses
from score_jax.losses import LossConfig
from tests.training import full_logits


def _np_kl(logits_p, logits_q):
  p = np.exp(logits_p - logits_p.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = np.exp(logits_q - logits_q.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def test_kl_zero_when_policy_equals_reference():
  logits = jax.random.normal(jax.random.key(0), (2, 5, 11))
  np.testing.assert_allclose(losses.kl_exact(logits, logits), 0.0, atol=1e-6)
  logp = losses.token_log_probs(logits, jnp.zeros((2, 5), jnp.int32))
  for est in ('k1', 'k3'):
    np.testing.assert_allclose(losses.kl_sampled(logp, logp, est), 0.0, atol=1e-7)


def test_kl_matches_direct_computation():
  k1, k2 = jax.random.split(jax.random.key(1))
  lp = np.asarray(jax.random.normal(k1, (3, 4, 7)))
  lq = np.asarray(jax.random.normal(k2, (3, 4, 7)))
  np.testing.assert_allclose(losses.kl_exact(lp, lq), _np_kl(lp, lq), rtol=1e-5, atol=1e-6)
  # Sampled estimators: k1 = log p/q, k3 = q/p - 1 - log q/p at the token.
  logp, logq = np.log(0.2), np.log(0.5)
  assert float(losses.kl_sampled(jnp.array(logp), jnp.array(logq), 'k1')) == pytest.approx(
      np.log(0.2 / 0.5), rel=1e-6)
  assert float(losses.kl_sampled(jnp.array(logp), jnp.array(logq), 'k3')) == pytest.approx(
      0.5 / 0.2 - 1 - np.log(0.5 / 0.2), rel=1e-6)


def test_sampled_k1_k3_are_unbiased_for_the_exact_kl():
  """E_{y~p}[k1] = E_{y~p}[k3] = KL(p||q): check by exact enumeration."""
  lp = jnp.array([0.3, -1.0, 2.0, 0.1])
  lq = jnp.array([1.0, 0.0, -0.5, 0.2])
  logp = jax.nn.log_softmax(lp)
  logq = jax.nn.log_softmax(lq)
  exact = float(losses.kl_exact(lp[None], lq[None])[0])
  for est in ('k1', 'k3'):
    expectation = float(jnp.sum(jnp.exp(logp) * losses.kl_sampled(logp, logq, est)))
    assert expectation == pytest.approx(exact, rel=1e-5)


def test_next_token_log_probs_alignment():
  logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
  tokens = jnp.array([[0, 1, 1]])
  got = full_logits.next_token_log_probs(logits, tokens)
  np.testing.assert_allclose(got, np.log([[1.0, 0.5, 0.1]]), rtol=1e-6)


def test_loo_and_batch_mean_baselines():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
  # Groups of 3: [1,0,0] -> 1-0, 0-0.5, 0-0.5; [1,1,1] -> 0,0,0.
  np.testing.assert_allclose(losses.advantages(r, 'loo', 3), [1.0, -0.5, -0.5, 0, 0, 0])
  np.testing.assert_allclose(losses.advantages(r, 'batch_mean'), r - 4 / 6)
  np.testing.assert_allclose(losses.advantages(r, 'none'), r)
  with pytest.raises(ValueError, match='samples_per_prompt'):
    LossConfig(baseline='loo', samples_per_prompt=1)


def test_reinforce_gradient_equals_score_function_on_two_action_policy():
  """pi(a=1) = sigmoid(theta): d/dtheta log pi(a) = a - pi(1)."""
  theta = 0.3
  actions = jnp.array([1, 0, 1, 1, 0])
  rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0])
  cfg = LossConfig(baseline='batch_mean')

  def loss(theta):
    logits = jnp.stack([jnp.zeros(()), theta])[None, None, :].repeat(5, 0)  # (5,1,2)
    logp_B1 = losses.token_log_probs(logits, actions[:, None])
    adv = losses.advantages(rewards, cfg.baseline)
    return losses.reinforce_term(logp_B1, jnp.ones((5, 1), bool), adv, cfg, 5)

  p1 = 1 / (1 + np.exp(-theta))
  adv = np.asarray(rewards) - np.mean(np.asarray(rewards))
  expected = -np.mean(adv * (np.asarray(actions) - p1))
  assert float(jax.grad(loss)(theta)) == pytest.approx(expected, rel=1e-5)


def _toy_trace(key, b=4, t=6, v=5):
  k1, k2, k3 = jax.random.split(key, 3)
  logits = jax.random.normal(k1, (b, t, v))
  ref_logits = jax.random.normal(k2, (b, t, v))
  tokens = jax.random.randint(k3, (b, t), 0, v)
  y1 = jnp.zeros((b, t), bool).at[:, 1:3].set(True)
  y2 = jnp.zeros((b, t), bool).at[:, 4:6].set(True)
  return logits, ref_logits, tokens, y1, y2


def _stage_loss(fn, cfg, logits, ref_logits, tokens, y1, y2, r1, r2):
  logp = losses.token_log_probs(logits, tokens)
  ref_logp = losses.token_log_probs(ref_logits, tokens)
  kl = losses.kl_per_token(cfg, logp, ref_logp, logits, ref_logits)
  return fn(logp, kl, y1, y2, r1, r2, cfg)[0]


@pytest.mark.parametrize('estimator', ['exact', 'k3'])
def test_stage_one_gradient_on_y1_comes_only_from_kl(estimator):
  logits, ref_logits, tokens, y1, y2 = _toy_trace(jax.random.key(2))
  r1 = jnp.array([0.0, 1.0, 0.0, 1.0])
  r2 = jnp.array([1.0, 1.0, 0.0, 0.0])
  cfg = LossConfig(beta1=0.05, kl_estimator=estimator, baseline='batch_mean')
  args = (ref_logits, tokens, y1, y2, r1, r2)
  grad = jax.grad(lambda l: _stage_loss(losses.stage_one_loss, cfg, l, *args))(logits)

  def kl_only(l):  # hand-derived: beta2 * mean_rows(sum_{t in y1} KL_t)
    logp = losses.token_log_probs(l, tokens)
    kl = losses.kl_per_token(cfg, logp, losses.token_log_probs(ref_logits, tokens), l,
                             ref_logits)
    return cfg.stage_one_beta * jnp.mean(jnp.sum(jnp.where(y1, kl, 0.0), 1))

  grad_kl = jax.grad(kl_only)(logits)
  np.testing.assert_allclose(grad[y1], grad_kl[y1], rtol=1e-5, atol=1e-7)
  assert cfg.stage_one_beta == pytest.approx(10 * cfg.beta1)
  # Without the KL, y1 gets no gradient at all (reward is on y2 only) ...
  no_kl = LossConfig(beta1=0.0, beta2=0.0, kl_estimator=estimator, baseline='batch_mean')
  grad0 = jax.grad(lambda l: _stage_loss(losses.stage_one_loss, no_kl, l, *args))(logits)
  np.testing.assert_array_equal(grad0[y1], 0.0)
  # ... while y2 does (its reward varies across rows).
  assert float(jnp.abs(grad0[y2]).max()) > 1e-3


def test_stage_two_bonus_flips_y2_advantage_exactly_where_r2_below_r1():
  r1 = jnp.array([0.0, 0.0, 1.0, 1.0])
  r2 = jnp.array([0.0, 1.0, 0.0, 1.0])
  _, r2_hat = losses.shaped_rewards(r1, r2, alpha=10.0)
  np.testing.assert_allclose(r2_hat, [0.0, 11.0, -10.0, 1.0])
  plain = losses.advantages(r2, 'none')
  shaped = losses.advantages(r2_hat, 'none')
  flipped = np.sign(np.asarray(shaped)) != np.sign(np.asarray(plain))
  np.testing.assert_array_equal(flipped, np.asarray(r2 < r1))


def test_stage_two_gradient_matches_hand_derived_reinforce():
  logits, ref_logits, tokens, y1, y2 = _toy_trace(jax.random.key(3))
  r1 = jnp.array([1.0, 0.0, 1.0, 0.0])
  r2 = jnp.array([1.0, 1.0, 0.0, 0.0])
  cfg = LossConfig(beta1=0.0, alpha=10.0, baseline='none')
  args = (ref_logits, tokens, y1, y2, r1, r2)
  grad = jax.grad(lambda l: _stage_loss(losses.stage_two_loss, cfg, l, *args))(logits)

  def by_hand(l):
    logp = losses.token_log_probs(l, tokens)
    r2_hat = r2 + 10.0 * (r2 - r1)
    per_row = (r1 * jnp.sum(jnp.where(y1, logp, 0), 1)
               + r2_hat * jnp.sum(jnp.where(y2, logp, 0), 1))
    return -jnp.mean(per_row)

  np.testing.assert_allclose(grad, jax.grad(by_hand)(logits), rtol=1e-5, atol=1e-7)


def _np_logp(logits, tokens):
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return np.take_along_axis(logp, tokens[..., None], -1)[..., 0]


def test_kl_in_reward_has_no_kl_loss_term_and_lowers_returns():
  logits, ref_logits, tokens, y1, y2 = _toy_trace(jax.random.key(4))
  r = jnp.ones(4)
  beta = 0.1
  cfg = LossConfig(beta1=beta, kl_estimator='exact', kl_in_reward=True, baseline='none',
                   alpha=0.0)
  logp = losses.token_log_probs(logits, tokens)
  kl = losses.kl_per_token(cfg, logp, losses.token_log_probs(ref_logits, tokens), logits,
                           ref_logits)
  _, m = losses.stage_two_loss(logp, kl, y1, y2, r, r, cfg)
  assert float(m['kl_loss']) == 0.0
  # Hand-derived returns: r - beta * (the turn's summed exact KL, from numpy). With no
  # baseline the advantage is the return, so |A| = 1 - beta * KL_seq < 1 = r.
  kl_np = _np_kl(np.asarray(logits), np.asarray(ref_logits))
  for turn, mask in (('y1', y1), ('y2', y2)):
    returns = 1.0 - beta * np.where(np.asarray(mask), kl_np, 0.0).sum(1)
    assert (returns < 1.0).all() and (returns > 0).all()
    assert float(m[f'{turn}/advantage_abs']) == pytest.approx(np.mean(returns), rel=1e-5)


def test_kl_in_reward_gradient_is_reinforce_on_the_kl_penalised_return():
  logits, ref_logits, tokens, y1, y2 = _toy_trace(jax.random.key(5))
  r1 = jnp.array([1.0, 0.0, 1.0, 0.0])
  r2 = jnp.array([1.0, 1.0, 0.0, 0.0])
  cfg = LossConfig(beta1=0.3, kl_estimator='k1', kl_in_reward=True, baseline='none',
                   alpha=2.0)
  args = (ref_logits, tokens, y1, y2, r1, r2)
  grad = jax.grad(lambda l: _stage_loss(losses.stage_two_loss, cfg, l, *args))(logits)
  # The penalty is a constant of the gradient: k1 per token from numpy, summed per turn.
  k1 = _np_logp(np.asarray(logits), np.asarray(tokens)) - _np_logp(
      np.asarray(ref_logits), np.asarray(tokens))
  ret1 = np.asarray(r1) - 0.3 * np.where(np.asarray(y1), k1, 0).sum(1)
  r2_hat = np.asarray(r2) + 2.0 * (np.asarray(r2) - np.asarray(r1))
  ret2 = r2_hat - 0.3 * np.where(np.asarray(y2), k1, 0).sum(1)

  def by_hand(l):
    logp = losses.token_log_probs(l, tokens)
    return -jnp.mean(ret1 * jnp.sum(jnp.where(y1, logp, 0), 1)
                     + ret2 * jnp.sum(jnp.where(y2, logp, 0), 1))

  np.testing.assert_allclose(grad, jax.grad(by_hand)(logits), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('stage', ['stage1', 'stage2'])
def test_credit_y1_with_y2_weights_y1_by_the_episode_return(stage):
  logits, ref_logits, tokens, y1, y2 = _toy_trace(jax.random.key(6))
  r1 = jnp.array([1.0, 0.0, 1.0, 0.0])
  r2 = jnp.array([1.0, 1.0, 0.0, 0.0])
  fn = losses.stage_one_loss if stage == 'stage1' else losses.stage_two_loss
  args = (ref_logits, tokens, y1, y2, r1, r2)

  def grad(credit):
    cfg = LossConfig(beta1=0.0, beta2=0.0, alpha=3.0, baseline='none',
                     credit_y1_with_y2=credit)
    return jax.grad(lambda l: _stage_loss(fn, cfg, l, *args))(logits)

  # By hand (shared/design/score-method.md): Stage I rewards y2 only, so y1's
  # return is r2 when credited, else 0; Stage II's y1 return is r1 + r2_hat
  # when credited, else r1, with r2_hat = r2 + alpha (r2 - r1).
  r1n, r2n = np.asarray(r1), np.asarray(r2)
  r2_hat = r2n + 3.0 * (r2n - r1n)
  ret1, ret2 = (r2n, r2n) if stage == 'stage1' else (r1n + r2_hat, r2_hat)

  def by_hand(l):
    logp = losses.token_log_probs(l, tokens)
    return -jnp.mean(ret1 * jnp.sum(jnp.where(y1, logp, 0), 1)
                     + ret2 * jnp.sum(jnp.where(y2, logp, 0), 1))

  credited = grad(True)
  np.testing.assert_allclose(credited, jax.grad(by_hand)(logits), rtol=1e-5, atol=1e-7)
  # Only y1's gradient changes.
  plain = grad(False)
  np.testing.assert_allclose(credited[y2], plain[y2], rtol=1e-6)
  assert float(jnp.abs(credited[y1] - plain[y1]).max()) > 1e-3


def test_token_normalisation_divides_by_all_scored_tokens():
  logits, ref_logits, tokens, y1, y2 = _toy_trace(jax.random.key(7))
  y2 = y2.at[0, 5].set(False).at[1, 4:6].set(False)   # y2 lengths 1, 0, 2, 2
  r1 = jnp.array([1.0, 0.0, 1.0, 0.0])
  r2 = jnp.array([1.0, 1.0, 0.0, 1.0])
  beta, alpha = 0.2, 1.5
  args = (ref_logits, tokens, y1, y2, r1, r2)
  token = LossConfig(beta1=beta, alpha=alpha, baseline='none', normalize='token')
  got = float(_stage_loss(losses.stage_two_loss, token, logits, *args))
  # By hand in numpy: every scored token (8 of y1, 5 of y2) weighs 1/13.
  logp = _np_logp(np.asarray(logits), np.asarray(tokens))
  kl = _np_kl(np.asarray(logits), np.asarray(ref_logits))
  m1, m2 = np.asarray(y1), np.asarray(y2)
  r1n, r2n = np.asarray(r1), np.asarray(r2)
  r2_hat = r2n + alpha * (r2n - r1n)
  n = m1.sum() + m2.sum()
  assert n == 13
  pg = -((r1n[:, None] * logp * m1).sum() + (r2_hat[:, None] * logp * m2).sum()) / n
  want = pg + beta * ((kl * m1).sum() + (kl * m2).sum()) / n
  assert got == pytest.approx(want, rel=1e-5)
  sequence = LossConfig(beta1=beta, alpha=alpha, baseline='none', normalize='sequence')
  assert float(_stage_loss(losses.stage_two_loss, sequence, logits, *args)) != (
      pytest.approx(want, rel=1e-3))


def test_sft_loss_is_mean_nll_over_targets():
  logp = jnp.log(jnp.array([[0.5, 0.25, 1.0], [0.1, 1.0, 1.0]]))
  mask = jnp.array([[True, True, False], [True, False, False]])
  loss, _ = losses.sft_loss(logp, mask)
  assert float(loss) == pytest.approx(-(np.log(0.5) + np.log(0.25) + np.log(0.1)) / 3)


def test_bad_config_names_field():
  with pytest.raises(ValueError, match='kl_estimator'):
    LossConfig(kl_estimator='k2')
