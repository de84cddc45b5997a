"""Tests of score_jax.training.state: the learning-rate schedule the optimizer applies."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.training import state as state_lib


def _applied_learning_rates(cfg: state_lib.OptimConfig, micro_steps: int) -> list[float]:
  """Learning rate of each real update, read off a 1-parameter AdamW run.

  With a constant gradient of 1, Adam's bias-corrected m_hat / sqrt(v_hat) is 1,
  so every applied update is -lr_t / (1 + eps) up to float32 rounding of Adam's
  bias corrections (1 - b^t: ~1e-5 relative): the step sizes are the schedule's
  values at the updates the optimizer really makes.
  """
  tx = state_lib.make_optimizer(cfg)
  params = {'w': jnp.zeros(())}
  opt_state = tx.init(params)
  rates = []
  for _ in range(micro_steps):
    updates, opt_state = tx.update({'w': jnp.ones(())}, opt_state, params)
    delta = -float(updates['w']) * (1 + cfg.eps)
    if delta != 0.0:   # MultiSteps emits zeros between real updates
      rates.append(delta)
  return rates


def _cosine(lr: float, decay_steps: int, count: int) -> float:
  return lr * 0.5 * (1 + math.cos(math.pi * min(count, decay_steps) / decay_steps))


@pytest.mark.parametrize('accum', [1, 2, 4])
def test_cosine_decays_over_the_whole_run_whatever_the_accumulation(accum):
  # 16 train steps (micro-batches) = 16 / accum updates; the cosine must span them
  # all, ending near 0, not stop 1/accum of the way down.
  cfg = state_lib.OptimConfig(learning_rate=1.0, schedule='cosine', total_steps=16,
                              grad_clip_norm=None, grad_accum_steps=accum)
  updates = 16 // accum
  want = [_cosine(1.0, updates, i) for i in range(updates)]
  np.testing.assert_allclose(_applied_learning_rates(cfg, 16), want, rtol=1e-4, atol=1e-6)


def test_warmup_counts_train_steps_too():
  # 4 warm-up train steps with accum 2 = 2 warm-up updates: lr 0, 0.5, then cosine
  # over the remaining (16 - 4) / 2 = 6 updates.
  cfg = state_lib.OptimConfig(learning_rate=1.0, schedule='cosine', total_steps=16,
                              warmup_steps=4, grad_clip_norm=None, grad_accum_steps=2)
  want = [0.0, 0.5] + [_cosine(1.0, 6, i) for i in range(6)]
  got = _applied_learning_rates(cfg, 16)
  # The first update has lr 0 exactly, so it does not show as a step.
  np.testing.assert_allclose(got, want[1:], rtol=1e-4, atol=1e-6)
