"""Supervised data for the phases around RL: the demo's base_sft, STaR and Pair-SFT.

Each builder returns (traces, target_mask): packed CorrectionTraces of the same
static length as the sampler's, and which tokens carry the SFT loss.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from score_jax.data import synthetic
from score_jax.sampling import trace as trace_lib
from score_jax.training.experiment import Experiment


def _concat_traces(parts: Sequence[trace_lib.CorrectionTrace]) -> trace_lib.CorrectionTrace:
  return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)


def _turn(exp: Experiment, text: str) -> list[int]:
  return exp.tokenizer.encode(text) + exp.prompt_format.turn_end_ids(exp.tokenizer)


def trace_length(exp: Experiment) -> int:
  return exp.sampler(1.0).cfg.trace_len(len(exp.chunk_ids))


def pack(exp: Experiment, questions: Sequence[str], y1s: Sequence[list[int]],
         y2s: Sequence[list[int]] | None) -> trace_lib.CorrectionTrace:
  prompts = [exp.prompt_format.prompt_ids(exp.tokenizer, q) for q in questions]
  return trace_lib.pack_traces(prompts, y1s, exp.chunk_ids, y2s, exp.tokenizer.pad_id,
                               trace_length(exp), stop_ids=exp.stop_ids)


def base_sft_data(exp: Experiment, examples: Sequence, seed: int,
                  corrupt_fraction: float):
  """Single attempts (loss on y1) + two attempts whose y1 may be corrupted (loss on y2).

  This is supervised training on synthetic corrections: it gives the base model
  a correction prior to explore from (see shared/design/tiny-demo-study.md).
  """
  single, double = synthetic.base_sft_examples(examples, seed, corrupt_fraction)
  t_single = pack(exp, [w.prompt for w in single], [_turn(exp, w.y1) for w in single], None)
  t_double = pack(exp, [w.prompt for w in double], [_turn(exp, w.y1) for w in double],
                  [_turn(exp, w.y2) for w in double])
  traces = _concat_traces([t_single, t_double])
  target = np.concatenate([np.asarray(t_single.y1_mask_BT), np.asarray(t_double.y2_mask_BT)])
  return traces, target


def star_data(r1: np.ndarray, r2: np.ndarray, y1s, y2s, questions, exp: Experiment,
              keep_right_right: bool):
  """STaR: keep the base model's wrong->right traces (D+: also right->right); loss on y2."""
  keep = (r1 == 0) & (r2 == 1)
  if keep_right_right:
    keep |= (r1 == 1) & (r2 == 1)
  idx = np.flatnonzero(keep)
  eot = exp.prompt_format.turn_end_ids(exp.tokenizer)
  traces = pack(exp, [questions[i] for i in idx], [list(y1s[i]) + eot for i in idx],
                [list(y2s[i]) + eot for i in idx])
  return traces, np.asarray(traces.y2_mask_BT)


def pair_sft_data(answers_by_problem: dict[int, tuple[list[list[int]], list[list[int]]]],
                  questions: Sequence[str], exp: Experiment, seed: int):
  """Pair-SFT: a wrong and a right base-model answer of one problem as y1 -> y2; loss on y2."""
  rng = np.random.default_rng(seed)
  q, y1s, y2s = [], [], []
  eot = exp.prompt_format.turn_end_ids(exp.tokenizer)
  for i, (wrong, right) in sorted(answers_by_problem.items()):
    if wrong and right:
      q.append(questions[i])
      y1s.append(list(wrong[rng.integers(len(wrong))]) + eot)
      y2s.append(list(right[rng.integers(len(right))]) + eot)
  traces = pack(exp, q, y1s, y2s)
  return traces, np.asarray(traces.y2_mask_BT)
