"""Self-correction metrics of SCoRe, in plain numpy: no model, no JAX.

Definitions follow the paper (Kumar et al. 2024, arXiv 2409.12917) and
shared/design/score-method.md, section Metrics:

- Accuracy@t1, Accuracy@t2: mean binary reward of the first / second attempt.
- Delta(t1, t2) = Accuracy@t2 - Accuracy@t1.
- Delta_i->c: fraction of problems wrong at t1 and right at t2.
- Delta_c->i: fraction of problems right at t1 and wrong at t2.
  (Delta = Delta_i->c - Delta_c->i, exactly.)
- Edit distance ratio between y1 and y2: Levenshtein distance over tokens
  divided by the longer length; 0 means y2 copied y1 (behaviour collapse).
- Inference-compute scaling: majority voting over K parallel first attempts
  against majority voting over the final answers of K/2 first attempts each
  followed by one correction round.

Our choices (the paper is silent): the confidence interval for Delta is a paired
percentile bootstrap over problems; majority-vote ties go to the answer seen
first; a missing answer (None) never wins a vote, and a problem whose answers
are all None counts as wrong.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

_WHERE = 'score_jax/evaluation.py'
# Resample indices are drawn in blocks of at most this many entries (memory cap).
_BOOTSTRAP_BLOCK_ENTRIES = 1 << 22


def _binary_rewards(name: str, r: Any) -> np.ndarray:
  """Returns `r` as a 1-D int64 array of 0/1, or raises a ValueError naming it."""
  r_N = np.asarray(r)
  if r_N.ndim != 1:
    raise ValueError(f'{_WHERE}: {name} must be 1-D (one reward per problem); '
                     f'got shape {r_N.shape}')
  if r_N.size == 0:
    raise ValueError(f'{_WHERE}: {name} is empty; expected at least one problem')
  if r_N.dtype == bool:
    return r_N.astype(np.int64)
  if not np.issubdtype(r_N.dtype, np.number):
    raise ValueError(f'{_WHERE}: {name} must be numeric 0/1; got dtype {r_N.dtype}')
  bad_N = (r_N != 0) & (r_N != 1)
  if bad_N.any():
    i = int(np.flatnonzero(bad_N)[0])
    raise ValueError(f'{_WHERE}: {name}[{i}] = {r_N[i].item()!r}; rewards must be binary '
                     '(0 or 1)')
  return r_N.astype(np.int64)


def _paired_rewards(r1: Any, r2: Any) -> tuple[np.ndarray, np.ndarray]:
  r1_N, r2_N = _binary_rewards('r1', r1), _binary_rewards('r2', r2)
  if r1_N.shape != r2_N.shape:
    raise ValueError(f'{_WHERE}: r1 has {r1_N.size} problems but r2 has {r2_N.size}; '
                     'expected one reward per problem for both attempts')
  return r1_N, r2_N


def correction_metrics(r1: Any, r2: Any) -> dict[str, float | int]:
  """Accuracy at both attempts and the correction deltas.

  Args:
    r1: per-problem binary reward of the first attempt, shape [N].
    r2: per-problem binary reward of the second attempt, shape [N].

  Returns:
    dict with acc_t1, acc_t2, delta (= acc_t2 - acc_t1), delta_i_to_c (wrong at
    t1, right at t2), delta_c_to_i (right at t1, wrong at t2), all fractions in
    [0, 1] (delta in [-1, 1]), and n (number of problems). Each is an integer
    count divided by n; in counts delta = i_to_c - c_to_i exactly.
  """
  r1_N, r2_N = _paired_rewards(r1, r2)
  n = int(r1_N.size)
  n_i_to_c = int(np.sum((r1_N == 0) & (r2_N == 1)))
  n_c_to_i = int(np.sum((r1_N == 1) & (r2_N == 0)))
  return {
      'acc_t1': int(r1_N.sum()) / n,
      'acc_t2': int(r2_N.sum()) / n,
      'delta': (n_i_to_c - n_c_to_i) / n,
      'delta_i_to_c': n_i_to_c / n,
      'delta_c_to_i': n_c_to_i / n,
      'n': n,
  }


def _token_ids(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
  """Maps the tokens of both sequences to shared integer ids."""
  vocab: dict[Hashable, int] = {}
  out = []
  for name, seq in (('a', a), ('b', b)):
    if isinstance(seq, np.ndarray) and seq.ndim != 1:
      raise ValueError(f'{_WHERE}: edit distance input {name} must be a 1-D token '
                       f'sequence; got shape {seq.shape}')
    ids = [vocab.setdefault(tok.item() if isinstance(tok, np.generic) else tok, len(vocab))
           for tok in seq]
    out.append(np.asarray(ids, dtype=np.int64))
  return out[0], out[1]


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
  """Levenshtein distance (unit insert, delete, substitute) between two sequences.

  Tokens may be ints, strings or any hashables; a str is a sequence of
  characters. O(len(a) * len(b)) work: the DP runs one numpy row per token of
  the shorter sequence, and the in-row insertion chain
  cur[j] = min(cur[j], cur[j-1] + 1) is a running minimum:
  cur[j] = j + min_{k<=j}(tmp[k] - k).
  """
  a_M, b_L = _token_ids(a, b)
  if a_M.size > b_L.size:
    a_M, b_L = b_L, a_M
  if a_M.size == 0:
    return int(b_L.size)
  j_L1 = np.arange(b_L.size + 1)
  prev_L1 = j_L1.copy()
  tmp_L1 = np.empty_like(prev_L1)
  for i, tok in enumerate(a_M, start=1):
    tmp_L1[0] = i
    np.minimum(prev_L1[:-1] + (b_L != tok), prev_L1[1:] + 1, out=tmp_L1[1:])
    prev_L1 = np.minimum.accumulate(tmp_L1 - j_L1) + j_L1
  return int(prev_L1[-1])


def edit_distance_ratio(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
  """Levenshtein distance / max(len(a), len(b)), in [0, 1]; two empties give 0.

  0 means y2 is a copy of y1 (collapse); 1 means nothing was kept.
  """
  longest = max(len(a), len(b))
  return 0.0 if longest == 0 else edit_distance(a, b) / longest


def mean_edit_distance_ratio(y1s: Sequence[Sequence[Hashable]],
                             y2s: Sequence[Sequence[Hashable]]) -> float:
  """Mean edit_distance_ratio over pairs (y1s[i], y2s[i]) of token sequences."""
  if len(y1s) != len(y2s):
    raise ValueError(f'{_WHERE}: y1s has {len(y1s)} sequences but y2s has {len(y2s)}; '
                     'expected one (y1, y2) pair per problem')
  if len(y1s) == 0:
    raise ValueError(f'{_WHERE}: y1s and y2s are empty; expected at least one pair')
  return float(np.mean([edit_distance_ratio(a, b) for a, b in zip(y1s, y2s)]))


def paired_bootstrap_ci(r1: Any, r2: Any, num_resamples: int = 10000,
                        confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap confidence interval for Delta = Acc@t2 - Acc@t1.

  Each resample draws N problem indices with replacement and uses the SAME
  indices for both attempts (paired), so the statistic is the mean of
  d = r2 - r1 over the resampled problems. The interval is the
  ((1 - confidence) / 2, (1 + confidence) / 2) quantiles (numpy 'linear') of
  the resampled Deltas, as fractions like `delta`. Deterministic for a seed.
  """
  if num_resamples < 1:
    raise ValueError(f'{_WHERE}: num_resamples = {num_resamples}; expected >= 1')
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'{_WHERE}: confidence = {confidence}; expected in (0, 1)')
  r1_N, r2_N = _paired_rewards(r1, r2)
  d_N = r2_N - r1_N
  n = d_N.size
  rng = np.random.default_rng(seed)
  block = max(1, _BOOTSTRAP_BLOCK_ENTRIES // n)
  deltas_R = np.empty(num_resamples, dtype=np.float64)
  for start in range(0, num_resamples, block):
    stop = min(start + block, num_resamples)
    idx_RN = rng.integers(0, n, size=(stop - start, n))
    deltas_R[start:stop] = d_N[idx_RN].sum(axis=1) / n
  tail = (1.0 - confidence) / 2.0
  low, high = np.quantile(deltas_R, [tail, 1.0 - tail])
  return float(low), float(high)


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
  """The most frequent non-None answer; ties go to the one seen first.

  Returns None when there is no non-None answer.
  """
  counts = collections.Counter()
  for ans in answers:
    if ans is not None:
      counts[ans] += 1  # Counter keeps first-insertion order.
  if not counts:
    return None
  top = max(counts.values())
  return next(ans for ans, c in counts.items() if c == top)


def majority_vote_accuracy(
    answers_per_problem: Sequence[Sequence[Hashable | None]],
    truth: Sequence[Hashable] | Callable[[int, Hashable], bool],
) -> float:
  """Fraction of problems whose majority-voted answer is correct.

  Args:
    answers_per_problem: per problem, the normalised answers of its samples
      (None = no answer extracted).
    truth: either the reference answer per problem (the voted answer is correct
      iff it equals it), or a callable correct_fn(problem_index, answer) -> bool.
      A problem with no non-None answer is wrong in both cases.
  """
  if len(answers_per_problem) == 0:
    raise ValueError(f'{_WHERE}: answers_per_problem is empty; expected >= 1 problem')
  if callable(truth):
    correct_fn = truth
  else:
    if len(truth) != len(answers_per_problem):
      raise ValueError(f'{_WHERE}: {len(answers_per_problem)} problems but '
                       f'{len(truth)} labels; expected one label per problem')
    correct_fn = lambda i, ans: ans == truth[i]
  n_correct = 0
  for i, answers in enumerate(answers_per_problem):
    voted = majority_vote(answers)
    n_correct += int(voted is not None and bool(correct_fn(i, voted)))
  return n_correct / len(answers_per_problem)


def _correctness_lookup(answers_per_problem, correct_per_problem, name):
  """correct_fn(i, answer) from per-sample correctness; checks it is consistent."""
  if len(correct_per_problem) != len(answers_per_problem):
    raise ValueError(f'{_WHERE}: {name}_answers has {len(answers_per_problem)} problems '
                     f'but {name}_correct has {len(correct_per_problem)}')
  tables = []
  for i, (answers, correct) in enumerate(zip(answers_per_problem, correct_per_problem)):
    if len(answers) != len(correct):
      raise ValueError(f'{_WHERE}: problem {i}: {len(answers)} {name} answers but '
                       f'{len(correct)} correctness flags; expected one per sample')
    correct_S = _binary_rewards(f'{name}_correct[{i}]', correct).astype(bool)
    table: dict[Hashable, bool] = {}
    for ans, ok in zip(answers, correct_S.tolist()):
      if ans is None:
        continue
      if table.setdefault(ans, ok) != ok:
        raise ValueError(f'{_WHERE}: problem {i}: answer {ans!r} is marked both correct '
                         f'and wrong in {name}_correct; expected correctness to be a '
                         'function of the normalised answer')
    tables.append(table)
  return lambda i, ans: tables[i][ans]


def inference_compute_comparison(
    first_answers: Sequence[Sequence[Hashable | None]],
    first_correct: Sequence[Sequence[Any]],
    second_answers: Sequence[Sequence[Hashable | None]],
    second_correct: Sequence[Sequence[Any]],
    k: int | None = None,
) -> dict[str, float | int]:
  """Majority@K over parallel samples vs majority@K/2 over self-corrected ones.

  The paper's inference-compute comparison at equal sample budget K: voting over
  K parallel first attempts against voting over the final (second-attempt)
  answers of K/2 first attempts each followed by one correction round.

  Args:
    first_answers: per problem, the K first-attempt answers (None = none).
    first_correct: per problem, their 0/1 correctness.
    second_answers: per problem, K/2 second-attempt answers; entry j is the
      correction of first attempt j.
    second_correct: per problem, their 0/1 correctness.
    k: the budget to evaluate (even, 2 <= k <= K): uses the first k first
      attempts and the first k/2 corrections. None means K.

  Returns:
    dict with k, acc_parallel (majority over k first attempts), acc_corrected
    (majority over k/2 second attempts), acc_parallel_half (majority over the
    k/2 first attempts that were corrected), acc_t1 / acc_t2 (mean single-sample
    accuracy of those first / second attempts).
  """
  if not first_answers:
    raise ValueError(f'{_WHERE}: first_answers is empty; expected >= 1 problem')
  big_k = min(len(a) for a in first_answers)
  if k is None:
    k = big_k
  if k < 2 or k % 2 or k > big_k:
    raise ValueError(f'{_WHERE}: k = {k}; expected an even budget with 2 <= k <= '
                     f'{big_k} (the fewest first attempts of any problem)')
  if len(second_answers) != len(first_answers):
    raise ValueError(f'{_WHERE}: first_answers has {len(first_answers)} problems but '
                     f'second_answers has {len(second_answers)}')
  for i, (a1, a2) in enumerate(zip(first_answers, second_answers)):
    if len(a2) * 2 != len(a1):
      raise ValueError(f'{_WHERE}: problem {i}: {len(a1)} first attempts but {len(a2)} '
                       'second attempts; expected K first and K/2 second attempts')
  correct1 = _correctness_lookup(first_answers, first_correct, 'first')
  correct2 = _correctness_lookup(second_answers, second_correct, 'second')
  half = k // 2
  par = [list(a[:k]) for a in first_answers]
  par_half = [list(a[:half]) for a in first_answers]
  corr = [list(a[:half]) for a in second_answers]
  return {
      'k': k,
      'acc_parallel': majority_vote_accuracy(par, correct1),
      'acc_corrected': majority_vote_accuracy(corr, correct2),
      'acc_parallel_half': majority_vote_accuracy(par_half, correct1),
      'acc_t1': float(np.mean([np.mean(np.asarray(c[:half], float)) for c in first_correct])),
      'acc_t2': float(np.mean([np.mean(np.asarray(c[:half], float)) for c in second_correct])),
  }


def summarize(r1: Any, r2: Any, y1_tokens: Sequence[Sequence[Hashable]] | None = None,
              y2_tokens: Sequence[Sequence[Hashable]] | None = None,
              bootstrap_seed: int = 0, num_resamples: int = 10000,
              confidence: float = 0.95) -> dict[str, Any]:
  """One method's row: correction_metrics + Delta's bootstrap CI + edit ratio.

  Returns correction_metrics(r1, r2) plus ci = (low, high) for delta, the
  confidence it was computed at, and edit_ratio (mean_edit_distance_ratio over
  the problems' (y1, y2) token sequences; None when tokens are not given).
  """
  out: dict[str, Any] = correction_metrics(r1, r2)
  out['ci'] = paired_bootstrap_ci(r1, r2, num_resamples, confidence, bootstrap_seed)
  out['confidence'] = confidence
  out['edit_ratio'] = None
  if (y1_tokens is None) != (y2_tokens is None):
    raise ValueError(f'{_WHERE}: give both y1_tokens and y2_tokens, or neither')
  if y1_tokens is not None:
    if len(y1_tokens) != out['n']:
      raise ValueError(f'{_WHERE}: {out["n"]} rewards but {len(y1_tokens)} token '
                       'sequences; expected one (y1, y2) pair per problem')
    out['edit_ratio'] = mean_edit_distance_ratio(y1_tokens, y2_tokens)
  return out


def _points(x: float) -> str:
  """A fraction as percentage points with one decimal, never '-0.0'."""
  s = f'{100.0 * x:.1f}'
  return '0.0' if s == '-0.0' else s


def format_table(rows: Mapping[str, Mapping[str, Any]], ci: bool = True) -> str:
  """Markdown table of summarize() rows, numbers in percent like the paper.

  Columns: method | Acc@t1 | Acc@t2 | Delta (95% CI) | Delta_i->c | Delta_c->i |
  edit ratio. Accuracies and deltas are percentages with one decimal (52.6);
  the CI is '[low, high]' in points after Delta; the edit ratio stays a ratio in
  [0, 1] with two decimals. Missing CI or edit ratio prints as '-'.
  """
  confidences = {row.get('confidence', 0.95) for row in rows.values()}
  if not ci:
    delta_head = 'Delta'
  elif len(confidences) == 1:
    delta_head = f'Delta ({100 * confidences.pop():g}% CI)'
  else:
    delta_head = 'Delta (CI)'
  lines = [f'| method | Acc@t1 | Acc@t2 | {delta_head} | Delta_i->c | Delta_c->i | edit ratio |',
           '|---|---|---|---|---|---|---|']
  for method, row in rows.items():
    for key in ('acc_t1', 'acc_t2', 'delta', 'delta_i_to_c', 'delta_c_to_i'):
      if key not in row:
        raise ValueError(f'{_WHERE}: row {method!r} has no field {key!r}; expected the '
                         'dict of summarize() or correction_metrics()')
    delta = _points(row['delta'])
    if ci:
      interval = row.get('ci')
      delta += (f' [{_points(interval[0])}, {_points(interval[1])}]'
                if interval is not None else ' -')
    edit = row.get('edit_ratio')
    cells = [str(method).replace('|', r'\|'), _points(row['acc_t1']), _points(row['acc_t2']),
             delta, _points(row['delta_i_to_c']), _points(row['delta_c_to_i']),
             '-' if edit is None else f'{edit:.2f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
