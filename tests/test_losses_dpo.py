"""dpo_loss against values derived by hand on a 2-example batch, and its gradient signs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses

# Two pairs: policy / reference log-probs of the chosen and rejected responses.
PC = np.array([-1.0, -2.0], np.float32)
PR = np.array([-3.0, -1.0], np.float32)
RC = np.array([-1.5, -1.0], np.float32)
RR = np.array([-2.0, -2.0], np.float32)
# h = (PC - RC) - (PR - RR), by hand: pair 0: 0.5 - (-1) = 1.5; pair 1: -1 - 1 = -2.
H = (1.5, -2.0)


def _softplus(x):
  return math.log1p(math.exp(x))


def _hand_sigmoid(beta, eps):
  # -log sigmoid(z) = softplus(-z); mean over the two pairs.
  per = [(1 - eps) * _softplus(-beta * h) + eps * _softplus(beta * h) for h in H]
  return sum(per) / 2


@pytest.mark.parametrize('beta', [0.1, 0.5])
@pytest.mark.parametrize('eps', [0.0, 0.2])
def test_dpo_sigmoid_matches_hand_derived_value(beta, eps):
  loss, m = losses.dpo_loss(PC, PR, RC, RR, beta, label_smoothing=eps)
  assert float(loss) == pytest.approx(_hand_sigmoid(beta, eps), rel=1e-6)
  # Implicit rewards beta * (log pi - log ref): chosen (0.5, -1), rejected (-1, 1).
  assert float(m['dpo/chosen_reward']) == pytest.approx(beta * (0.5 - 1.0) / 2, abs=1e-6)
  assert float(m['dpo/rejected_reward']) == pytest.approx(beta * (-1.0 + 1.0) / 2, abs=1e-6)
  assert float(m['dpo/margin']) == pytest.approx(beta * (1.5 - 2.0) / 2, abs=1e-6)
  assert float(m['dpo/reward_accuracy']) == 0.5   # pair 0 ranked right, pair 1 wrong


def test_beta_applied_once_not_squared():
  # The beta^2 mistake: scaling h by beta and again inside the sigmoid.
  beta = 0.5
  loss, _ = losses.dpo_loss(PC, PR, RC, RR, beta)
  squared = sum(_softplus(-beta * beta * h) for h in H) / 2
  assert abs(float(loss) - squared) > 1e-2
  assert float(loss) == pytest.approx(_hand_sigmoid(beta, 0.0), rel=1e-6)


def test_ipo_matches_hand_derived_value():
  beta = 0.5   # target margin 1 / (2 beta) = 1
  loss, _ = losses.dpo_loss(PC, PR, RC, RR, beta, loss_type='ipo')
  assert float(loss) == pytest.approx(((1.5 - 1) ** 2 + (-2 - 1) ** 2) / 2, rel=1e-6)


def test_weights_drop_pairs():
  loss, m = losses.dpo_loss(PC, PR, RC, RR, 0.1, weights_B=jnp.array([1.0, 0.0]))
  assert float(loss) == pytest.approx(_softplus(-0.1 * 1.5), rel=1e-6)
  assert float(m['dpo/pairs']) == 1.0


@pytest.mark.parametrize('loss_type', ['sigmoid', 'ipo'])
@pytest.mark.parametrize('eps', [0.0, 0.2])
def test_gradient_raises_chosen_lowers_rejected(loss_type, eps):
  fn = lambda pc, pr: losses.dpo_loss(pc, pr, RC, RR, 0.1, label_smoothing=eps,
                                      loss_type=loss_type)[0]
  g_chosen, g_rejected = jax.grad(fn, argnums=(0, 1))(jnp.asarray(PC), jnp.asarray(PR))
  # Descent moves against the gradient: chosen up, rejected down. Label smoothing
  # eps < 0.5 keeps that direction; for IPO (beta 0.1, target h = 5) both pairs
  # have h < 5, so both are pushed apart.
  assert np.all(np.asarray(g_chosen) < 0)
  assert np.all(np.asarray(g_rejected) > 0)
  np.testing.assert_allclose(g_chosen, -g_rejected, rtol=1e-6)


def test_reference_gets_no_gradient_and_bad_type_is_rejected():
  g = jax.grad(lambda rc: losses.dpo_loss(PC, PR, rc, RR, 0.1)[0])(jnp.asarray(RC))
  np.testing.assert_array_equal(g, 0.0)
  with pytest.raises(ValueError, match="loss_type 'hinge'"):
    losses.dpo_loss(PC, PR, RC, RR, 0.1, loss_type='hinge')
