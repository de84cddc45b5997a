"""Scores of a prompt's N sampled two-turn episodes, to pick DPO pairs (best vs worst).

- oracle: the task's own reward, r1 + r2 (a control; needs the reference answers).
- confidence (FactTune, Tian et al. 2023, model-confidence variant): per attempt,
  the share of the prompt's N samples whose extracted final answer agrees with
  this one's; no labels. A response with no answer scores 0.
- judge / judge_pairwise (RLAIF, Lee et al. 2023): see preference.judge.
Each scorer maps (rollout, examples of its rows, k) to scores (B,), higher better;
an episode's score is the sum over its two attempts.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

SCORERS = ('oracle', 'confidence', 'judge', 'judge_pairwise')

Scorer = Callable[[Any, Sequence[Any], int], np.ndarray]


def agreement(answers: Sequence[str | None], k: int) -> np.ndarray:
  """Per row: the fraction of its group of k rows (itself included) with its answer."""
  if len(answers) % k:
    raise ValueError(f'agreement: {len(answers)} answers; expected a multiple of k={k}')
  out = np.zeros(len(answers), np.float32)
  for g in range(0, len(answers), k):
    group = answers[g:g + k]
    for i, a in enumerate(group):
      out[g + i] = 0.0 if a is None else sum(b == a for b in group) / k
  return out


def confidence_scores(task, y1_texts: Sequence[str], y2_texts: Sequence[str],
                      k: int) -> np.ndarray:
  """FactTune's model confidence of each episode: agreement of y1 plus of y2."""
  answers = lambda texts: [task.extract_answer(t) for t in texts]
  return agreement(answers(y1_texts), k) + agreement(answers(y2_texts), k)


def pair_accuracy(scores_B: np.ndarray, oracle_B: np.ndarray, k: int) -> dict[str, float]:
  """How often a score orders two samples of one prompt as the oracle does.

  Over all within-prompt pairs whose oracle scores differ; a tie in `scores`
  counts one half. Returns {'pair_accuracy', 'pairs', 'ties'}.
  """
  s_Gk = np.asarray(scores_B, np.float64).reshape(-1, k)
  o_Gk = np.asarray(oracle_B, np.float64).reshape(-1, k)
  i, j = np.triu_indices(k, 1)
  do = np.sign(o_Gk[:, i] - o_Gk[:, j])
  ds = np.sign(s_Gk[:, i] - s_Gk[:, j])
  keep = do != 0
  n = int(keep.sum())
  if n == 0:
    return {'pair_accuracy': float('nan'), 'pairs': 0, 'ties': 0.0}
  hits = np.where(ds[keep] == 0, 0.5, (ds[keep] == do[keep]).astype(np.float64))
  return {'pair_accuracy': float(hits.mean()), 'pairs': n,
          'ties': float((ds[keep] == 0).mean())}


def _texts(exp, at):
  dec = lambda ids: exp.prompt_format.response_text(exp.tokenizer.decode(ids))
  return [dec(y) for y in at.y1_ids], [dec(y) for y in at.y2_ids]


def make_scorer(name: str, exp, judge=None) -> Scorer:
  """The scorer called `name` (one of SCORERS); the judge ones need `judge`."""
  if name not in SCORERS:
    raise ValueError(f'config.dpo.scorer={name!r}; expected one of {SCORERS}')
  if name == 'oracle':
    return lambda at, examples, k: at.r1_B.astype(np.float32) + at.r2_B.astype(np.float32)
  if name == 'confidence':
    def confidence(ro, examples, k):
      y1, y2 = _texts(exp, ro)
      return confidence_scores(exp.task, y1, y2, k)
    return confidence
  if judge is None:
    raise ValueError(f'scorer {name!r} needs a judge (preference.judge.Judge)')
  questions = lambda examples: [exp.task.first_turn_prompt(e) for e in examples]
  if name == 'judge':
    def pointwise(ro, examples, k):
      y1, y2 = _texts(exp, ro)
      q = questions(examples)
      return judge.yes_probability(q, y1) + judge.yes_probability(q, y2)
    return pointwise

  def pairwise(ro, examples, k):
    y1, y2 = _texts(exp, ro)
    q = questions(examples)
    return judge.round_robin(q, y1, k) + judge.round_robin(q, y2, k)
  return pairwise
