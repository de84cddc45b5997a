"""Tests of score_jax.training.report: the interval for a mean over seeds."""
import math

import numpy as np
import pytest

from score_jax.training import report

# Student-t quantiles t_{0.975, df} from any statistics table.
T975 = {1: 12.7062, 2: 4.30265, 4: 2.77645}


@pytest.mark.parametrize('values', [[5.4, 11.4, 2.0], [0.1, 0.0], [3.5, 9.8, 1.8, 2.0, 7.7]])
def test_seed_mean_interval_is_the_t_interval(values):
  n = len(values)
  mean = sum(values) / n
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  half = T975[n - 1] * sd / math.sqrt(n)
  got_mean, (lo, hi) = report.seed_mean_interval(values)
  assert got_mean == pytest.approx(mean)
  assert (lo, hi) == pytest.approx((mean - half, mean + half), rel=1e-4)


def test_mean_of_per_seed_bounds_is_not_the_interval():
  # README's greedy SCoRe Deltas: the old mean row averaged per-seed bounds,
  # [4.8, 7.8]; three seeds this far apart give a far wider interval for the mean.
  _, (lo, hi) = report.seed_mean_interval([5.4, 11.4, 2.0])
  assert lo < 0 < 7.8 < hi


def test_one_seed_has_no_interval():
  assert report.seed_mean_interval([0.3]) == (0.3, None)


def test_interval_covers_the_true_mean_at_its_level():
  # A property: over many 3-seed experiments from N(1, 2), about 95% of the
  # intervals hold the true mean (binomial sd of the rate over 4000 is 0.0034).
  rng = np.random.default_rng(0)
  hits = 0
  for _ in range(4000):
    _, (lo, hi) = report.seed_mean_interval(rng.normal(1.0, 2.0, 3))
    hits += lo <= 1.0 <= hi
  assert abs(hits / 4000 - 0.95) < 0.015
