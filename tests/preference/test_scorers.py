"""Scorers: FactTune agreement and pair accuracy against counts done by hand."""
import numpy as np
import pytest

from score_jax.data.synthetic import SyntheticArithmeticTask
from score_jax.preference import scorers


def test_agreement_by_hand():
  # k = 4: answers a, a, b, None -> 2/4, 2/4, 1/4, 0 (no answer scores 0).
  np.testing.assert_allclose(scorers.agreement(['a', 'a', 'b', None], 4),
                             [0.5, 0.5, 0.25, 0.0])
  with pytest.raises(ValueError, match='multiple of k=3'):
    scorers.agreement(['a'] * 4, 3)


def test_confidence_uses_the_tasks_extracted_answer_and_no_labels():
  task = SyntheticArithmeticTask(digits=1, num_train=10, num_test=5)
  y1 = ['07', ' 07<end_of_turn>', '08', 'x7']     # 'x7' has no answer
  y2 = ['07', '07', '07', '07']
  np.testing.assert_allclose(scorers.confidence_scores(task, y1, y2, 4),
                             [0.5 + 1, 0.5 + 1, 0.25 + 1, 0 + 1])


def test_pair_accuracy_by_hand():
  # One prompt, k = 3: oracle (2, 0, 1); score (0.9, 0.1, 0.9).
  # Pairs (0,1): oracle >, score > -> 1; (0,2): oracle >, score tie -> 0.5;
  # (1,2): oracle <, score < -> 1.  Mean 2.5 / 3.
  out = scorers.pair_accuracy(np.array([0.9, 0.1, 0.9]), np.array([2, 0, 1]), 3)
  assert out['pair_accuracy'] == pytest.approx(2.5 / 3)
  assert out['pairs'] == 3 and out['ties'] == pytest.approx(1 / 3)
  # Oracle (1, 0, 1, 1): only pairs with row 1 count. (0,1): score says 1 > 0,
  # oracle 0 > 1 -> wrong; (1,2), (1,3): right. 2 / 3.
  out = scorers.pair_accuracy(np.array([0., 1., 2., 3.]), np.array([1, 0, 1, 1]), 4)
  assert out['pairs'] == 3 and out['pair_accuracy'] == pytest.approx(2 / 3)
  assert scorers.pair_accuracy(np.array([0., 1.]), np.array([1, 0]), 2)['pair_accuracy'] == 0.0


def test_unknown_scorer_and_judge_without_model():
  with pytest.raises(ValueError, match="config.dpo.scorer='vibes'"):
    scorers.make_scorer('vibes', None)
  with pytest.raises(ValueError, match='needs a judge'):
    scorers.make_scorer('judge', None)
