"""Evaluation metric tests against hand-derived values, brute-force references and
statistical properties."""
import functools
import random

import numpy as np
import pytest

from score_jax import evaluation as ev

# Hand-made: t1 right on {0, 1, 4, 6, 9}, t2 right on {0, 2, 4, 5, 6, 9}.
R1 = [1, 1, 0, 0, 1, 0, 1, 0, 0, 1]
R2 = [1, 0, 1, 0, 1, 1, 1, 0, 0, 1]


def _levenshtein_reference(a, b):
  """Textbook recursive definition with memoisation (independent of the DP)."""

  @functools.lru_cache(maxsize=None)
  def dist(i, j):
    if i == 0:
      return j
    if j == 0:
      return i
    return min(dist(i - 1, j) + 1, dist(i, j - 1) + 1,
               dist(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

  return dist(len(a), len(b))


# --- correction_metrics ------------------------------------------------------


def test_correction_metrics_hand_example():
  m = ev.correction_metrics(R1, R2)
  assert m == {'acc_t1': 0.5, 'acc_t2': 0.6, 'delta': 0.1, 'delta_i_to_c': 0.2,
               'delta_c_to_i': 0.1, 'n': 10}
  # Same answer from bools and numpy arrays.
  assert ev.correction_metrics(np.array(R1, bool), np.array(R2, np.float32)) == m


def test_delta_identity_on_random_rewards():
  rng = np.random.default_rng(0)
  for n in (1, 7, 500):
    r1, r2 = rng.integers(0, 2, n), rng.integers(0, 2, n)
    m = ev.correction_metrics(r1, r2)
    # Exact in counts; in the returned fractions up to float rounding.
    counts = {k: round(m[k] * n) for k in ('delta', 'delta_i_to_c', 'delta_c_to_i')}
    assert counts['delta'] == counts['delta_i_to_c'] - counts['delta_c_to_i']
    assert m['delta'] == pytest.approx(m['delta_i_to_c'] - m['delta_c_to_i'], abs=1e-12)
    assert m['delta'] == pytest.approx(m['acc_t2'] - m['acc_t1'], abs=1e-12)
    assert m['acc_t1'] == pytest.approx(r1.mean()) and m['n'] == n


@pytest.mark.parametrize('r1, r2, match', [
    ([1, 0, 1], [1, 0], 'r1 has 3 problems but r2 has 2'),
    ([1, 0.5], [1, 0], r'r1\[1\] = .*binary'),
    ([1, 0], [2, 0], r'r2\[0\] = .*binary'),
    ([], [], 'empty'),
    ([[1, 0]], [[1, 0]], '1-D'),
    (['a', 'b'], [1, 0], 'numeric'),
])
def test_correction_metrics_rejects_bad_input(r1, r2, match):
  with pytest.raises(ValueError, match=match):
    ev.correction_metrics(r1, r2)


# --- edit distance -----------------------------------------------------------


def test_edit_distance_known_pairs():
  assert ev.edit_distance('kitten', 'sitting') == 3
  assert ev.edit_distance_ratio('kitten', 'sitting') == pytest.approx(3 / 7)
  assert ev.edit_distance('flaw', 'lawn') == 2
  assert ev.edit_distance([1, 2, 3], [1, 2, 3]) == 0
  assert ev.edit_distance_ratio([5, 6, 7], [5, 6, 7]) == 0.0  # collapse
  assert ev.edit_distance_ratio([1, 2, 3], [4, 5, 6]) == 1.0
  assert ev.edit_distance_ratio([], []) == 0.0
  assert ev.edit_distance_ratio([], ['x', 'y']) == 1.0
  assert ev.edit_distance(['the', 'cat', 'sat'], ['the', 'dog', 'sat', 'down']) == 2
  assert ev.edit_distance(np.array([3, 1, 4]), [3, 1, 4, 1, 5]) == 2


def test_edit_distance_matches_recursive_reference():
  rnd = random.Random(0)
  for _ in range(300):
    a = [rnd.randrange(3) for _ in range(rnd.randrange(9))]
    b = [rnd.randrange(3) for _ in range(rnd.randrange(9))]
    want = _levenshtein_reference(tuple(a), tuple(b))
    assert ev.edit_distance(a, b) == want, (a, b)
    assert ev.edit_distance(b, a) == want
    longest = max(len(a), len(b))
    assert ev.edit_distance_ratio(a, b) == (want / longest if longest else 0.0)


def test_edit_distance_long_sequences_closed_form():
  rng = np.random.default_rng(1)
  a = rng.integers(0, 1000, 400).tolist()
  # Appending c tokens costs exactly c; a prefix of the other sequence too.
  assert ev.edit_distance(a, a + [7] * 37) == 37
  assert ev.edit_distance(a[50:], a) == 50
  # Substituting s positions with unseen tokens costs exactly s (the lengths
  # match and no token can be reused), since changing s tokens needs >= s edits.
  b = list(a)
  for pos in rng.choice(400, 25, replace=False):
    b[pos] = -1 - int(pos)
  assert ev.edit_distance(a, b) == 25
  assert ev.edit_distance_ratio(a, b) == pytest.approx(25 / 400)


def test_mean_edit_distance_ratio():
  y1s = [[1, 2, 3, 4], [1, 2], []]
  y2s = [[1, 2, 3, 4], [3, 4], []]
  assert ev.mean_edit_distance_ratio(y1s, y2s) == pytest.approx((0 + 1 + 0) / 3)
  with pytest.raises(ValueError, match='y1s has 3 sequences but y2s has 2'):
    ev.mean_edit_distance_ratio(y1s, y2s[:2])
  with pytest.raises(ValueError, match='empty'):
    ev.mean_edit_distance_ratio([], [])
  with pytest.raises(ValueError, match='1-D'):
    ev.edit_distance(np.zeros((2, 2)), [1])


# --- paired bootstrap --------------------------------------------------------


def _random_pair(n, p1, p2, seed):
  rng = np.random.default_rng(seed)
  return (rng.random(n) < p1).astype(int), (rng.random(n) < p2).astype(int)


def test_bootstrap_contains_estimate_and_is_deterministic():
  r1, r2 = _random_pair(200, 0.5, 0.55, seed=2)
  low, high = ev.paired_bootstrap_ci(r1, r2, seed=3)
  delta = ev.correction_metrics(r1, r2)['delta']
  assert low <= delta <= high
  assert ev.paired_bootstrap_ci(r1, r2, seed=3) == (low, high)
  # Another seed: another Monte Carlo draw of nearly the same interval (the
  # resampled Deltas live on the grid k / 200).
  low4, high4 = ev.paired_bootstrap_ci(r1, r2, seed=4)
  assert abs(low4 - low) <= 0.01 and abs(high4 - high) <= 0.01
  # Narrower at a lower confidence level.
  low90, high90 = ev.paired_bootstrap_ci(r1, r2, confidence=0.9, seed=3)
  assert low <= low90 and high90 <= high


def test_bootstrap_narrows_with_n_like_one_over_sqrt_n():
  r1, r2 = _random_pair(100, 0.5, 0.6, seed=5)
  low, high = ev.paired_bootstrap_ci(r1, r2)
  # Same empirical distribution, 16x the problems: width shrinks ~4x.
  low16, high16 = ev.paired_bootstrap_ci(np.tile(r1, 16), np.tile(r2, 16))
  ratio = (high - low) / (high16 - low16)
  assert 3.5 < ratio < 4.5


def test_bootstrap_matches_normal_approximation():
  r1, r2 = _random_pair(400, 0.5, 0.6, seed=6)
  d = np.asarray(r2 - r1, float)
  se = d.std() / np.sqrt(d.size)  # the bootstrap (plug-in) standard error
  low, high = ev.paired_bootstrap_ci(r1, r2, num_resamples=20000)
  assert (high - low) == pytest.approx(2 * 1.959964 * se, rel=0.05)
  assert (low + high) / 2 == pytest.approx(d.mean(), abs=0.2 * se)


def test_bootstrap_is_paired():
  # t1 == t2 on every problem but accuracy is 50%: resampling the two attempts
  # independently would give an interval about +-14 points wide; keeping the
  # pairs together gives Delta = 0 in every resample.
  r = [1, 0] * 50
  assert ev.paired_bootstrap_ci(r, r) == (0.0, 0.0)
  assert ev.paired_bootstrap_ci([0] * 30, [0] * 30) == (0.0, 0.0)


def test_bootstrap_big_effect_excludes_zero():
  r1, r2 = _random_pair(300, 0.3, 0.7, seed=7)
  low, high = ev.paired_bootstrap_ci(r1, r2)
  assert 0.0 < low < high
  low, high = ev.paired_bootstrap_ci(r2, r1)
  assert low < high < 0.0


def test_bootstrap_rejects_bad_arguments():
  with pytest.raises(ValueError, match='confidence'):
    ev.paired_bootstrap_ci(R1, R2, confidence=1.0)
  with pytest.raises(ValueError, match='num_resamples'):
    ev.paired_bootstrap_ci(R1, R2, num_resamples=0)
  with pytest.raises(ValueError, match='r1 has 10 problems but r2 has 9'):
    ev.paired_bootstrap_ci(R1, R2[:9])


# --- majority voting and inference compute -----------------------------------


def test_majority_vote_hand_examples():
  assert ev.majority_vote(['a', 'b', 'a']) == 'a'
  assert ev.majority_vote(['b', 'a', 'a', 'b']) == 'b'  # tie: first seen
  assert ev.majority_vote(['a', 'b', 'b', 'a']) == 'a'
  assert ev.majority_vote([None, None, 'x']) == 'x'  # None never wins
  assert ev.majority_vote([None, 'x', None, 'y', 'y']) == 'y'
  assert ev.majority_vote([None, None]) is None
  assert ev.majority_vote([]) is None


def test_majority_vote_accuracy_with_labels_and_fn():
  answers = [['1', '2', '1'], ['3', '4', '4', '3'], [None, None], [None, '5', None]]
  labels = ['1', '4', '7', '5']
  # votes: '1' right, '3' (tie, first seen) wrong, None wrong, '5' right.
  assert ev.majority_vote_accuracy(answers, labels) == 0.5
  assert ev.majority_vote_accuracy(answers, lambda i, a: a == labels[i]) == 0.5
  # A label of None never matches an all-None problem.
  assert ev.majority_vote_accuracy([[None]], [None]) == 0.0
  with pytest.raises(ValueError, match='2 labels'):
    ev.majority_vote_accuracy(answers, labels[:2])


def test_inference_compute_comparison_hand_example():
  # K = 4 per problem; second attempt j corrects first attempt j (j < 2).
  first_answers = [['a', 'b', 'b', 'c'],     # parallel vote 'b' (wrong)
                   ['x', 'y', 'x', None],    # parallel vote 'x' (right)
                   [None, None, None, 'q']]  # parallel vote 'q' (wrong)
  first_correct = [[1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
  second_answers = [['a', 'a'],   # corrected vote 'a' (right)
                    ['y', 'x'],   # tie -> 'y' (wrong)
                    [None, 'r']]  # 'r' (right)
  second_correct = [[1, 1], [0, 1], [0, 1]]
  out = ev.inference_compute_comparison(first_answers, first_correct, second_answers,
                                        second_correct)
  assert out['k'] == 4
  assert out['acc_parallel'] == pytest.approx(1 / 3)
  assert out['acc_corrected'] == pytest.approx(2 / 3)
  # First two first attempts: 'a' (tie a/b, right), 'x' (tie x/y, right), None.
  assert out['acc_parallel_half'] == pytest.approx(2 / 3)
  assert out['acc_t1'] == pytest.approx((0.5 + 0.5 + 0) / 3)
  assert out['acc_t2'] == pytest.approx((1 + 0.5 + 0.5) / 3)
  # Budget k = 2: one parallel pair vs one corrected sample.
  out2 = ev.inference_compute_comparison(first_answers, first_correct, second_answers,
                                         second_correct, k=2)
  assert out2['acc_parallel'] == pytest.approx(2 / 3)   # 'a', 'x', None
  assert out2['acc_corrected'] == pytest.approx(1 / 3)  # 'a', 'y', None


def test_inference_compute_comparison_rejects_bad_input():
  fa, fc = [['a', 'b']], [[1, 0]]
  with pytest.raises(ValueError, match='k = 3'):
    ev.inference_compute_comparison(fa, fc, [['a']], [[1]], k=3)
  with pytest.raises(ValueError, match='expected K first and K/2 second'):
    ev.inference_compute_comparison(fa, fc, [['a', 'b']], [[1, 0]])
  with pytest.raises(ValueError, match='marked both correct and wrong'):
    ev.inference_compute_comparison([['a', 'a']], [[1, 0]], [['a']], [[1]])
  with pytest.raises(ValueError, match=r'first_correct\[0\]\[1\] = 0.5'):
    ev.inference_compute_comparison(fa, [[1, 0.5]], [['a']], [[1]])
  with pytest.raises(ValueError, match='one per sample'):
    ev.inference_compute_comparison(fa, [[1]], [['a']], [[1]])


# --- summary and table -------------------------------------------------------


def test_summarize_combines_metrics_ci_and_edit_ratio():
  y1 = [[1, 2, 3]] * 10
  y2 = [[1, 2, 3]] * 5 + [[4, 5, 6]] * 5
  s = ev.summarize(R1, R2, y1, y2, bootstrap_seed=1, num_resamples=2000)
  assert {k: s[k] for k in ev.correction_metrics(R1, R2)} == ev.correction_metrics(R1, R2)
  assert s['ci'] == ev.paired_bootstrap_ci(R1, R2, 2000, 0.95, 1)
  assert s['edit_ratio'] == pytest.approx(0.5)
  assert ev.summarize(R1, R2, num_resamples=100)['edit_ratio'] is None
  with pytest.raises(ValueError, match='10 rewards but 2 token sequences'):
    ev.summarize(R1, R2, y1[:2], y2[:2])


def _paper_row(t1, t2, i_c, c_i, ci=None, edit=None):
  return {'acc_t1': t1, 'acc_t2': t2, 'delta': t2 - t1, 'delta_i_to_c': i_c,
          'delta_c_to_i': c_i, 'ci': ci, 'edit_ratio': edit}


def test_format_table_paper_numbers():
  rows = {'base': _paper_row(0.526, 0.414, 0.046, 0.158, ci=(-0.1423, -0.0811), edit=0.123),
          'SCoRe': _paper_row(0.600, 0.644, 0.058, 0.014, ci=(0.021, 0.0675), edit=0.456)}
  table = ev.format_table(rows)
  lines = table.splitlines()
  assert lines[0] == ('| method | Acc@t1 | Acc@t2 | Delta (95% CI) | Delta_i->c | '
                      'Delta_c->i | edit ratio |')
  assert lines[2] == '| base | 52.6 | 41.4 | -11.2 [-14.2, -8.1] | 4.6 | 15.8 | 0.12 |'
  assert lines[3] == '| SCoRe | 60.0 | 64.4 | 4.4 [2.1, 6.8] | 5.8 | 1.4 | 0.46 |'
  plain = ev.format_table(rows, ci=False).splitlines()
  assert '| Delta |' in plain[0] and plain[3].startswith('| SCoRe | 60.0 | 64.4 | 4.4 | 5.8')


def test_format_table_from_summarize_and_missing_fields():
  s = ev.summarize([1, 1, 0, 0], [1, 1, 0, 0], num_resamples=100)
  line = ev.format_table({'copy|cat': s}).splitlines()[2]
  assert line == r'| copy\|cat | 50.0 | 50.0 | 0.0 [0.0, 0.0] | 0.0 | 0.0 | - |'
  # A tiny negative rounds to '0.0', never '-0.0'.
  row = _paper_row(0.5, 0.4999, 0.0, 0.0001)
  assert '| 0.0 - |' in ev.format_table({'m': row})
  with pytest.raises(ValueError, match="no field 'delta'"):
    ev.format_table({'m': {'acc_t1': 0.5, 'acc_t2': 0.5}})
