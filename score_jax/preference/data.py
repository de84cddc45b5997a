"""Preference pairs for DPO: from a JSONL file, or built online from the policy's samples.

A DPO batch (batches.PairBatch, the `dpo` train step's input) holds P pairs as
2P packed rows: rows 0..P-1 chosen, P..2P-1 rejected; weight_B is the pair's
weight, repeated on both halves (0 drops it). response_mask_BT marks the tokens whose log-probs make the sequence log-prob: the
response (offline pairs), or both attempts y1 and y2 (online two-turn pairs).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from score_jax.data import records
from score_jax.batches import PairBatch, ScoreBatch

FIELDS = ('prompt', 'chosen', 'rejected')


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  """One line of a pairs file: the user prompt and two responses, chosen first."""
  prompt: str
  chosen: str
  rejected: str
  line: int = 0


def _pair(record: dict, where: str) -> PreferencePair:
  prompt, chosen, rejected = (records.get_field(record, f, str, where) for f in FIELDS)
  for field, text in (('chosen', chosen), ('rejected', rejected)):
    if not text.strip():
      raise ValueError(f"{where}: field '{field}' is empty; expected a response")
  if chosen.strip() == rejected.strip():
    raise ValueError(f"{where}: 'chosen' and 'rejected' are identical; expected two "
                     'different responses')
  return PreferencePair(prompt, chosen, rejected, int(where.rsplit(':', 1)[1]))


def load_pairs(path: str | pathlib.Path) -> list[PreferencePair]:
  """The pairs of a JSONL file, one {"prompt", "chosen", "rejected"} object a line.

  Blank lines are skipped. Raises ValueError naming file:line for a line that is
  not a JSON object, lacks a field, has an empty response, or repeats chosen as
  rejected.
  """
  pairs = [_pair(record, where) for where, record in records.read_jsonl(path)]
  if not pairs:
    raise ValueError(f'{path}: no preference pairs; expected JSONL lines with {list(FIELDS)}')
  return pairs


def dpo_batch(tokens_BT, valid_BT, response_mask_BT, chosen_P, rejected_P,
              weight_P) -> PairBatch:
  """Rows chosen_P then rejected_P of packed traces, as a DPO batch."""
  rows = np.concatenate([np.asarray(chosen_P), np.asarray(rejected_P)])
  weight = np.asarray(weight_P, np.float32)
  return PairBatch(tokens_BT=np.asarray(tokens_BT)[rows], valid_BT=np.asarray(valid_BT)[rows],
                   response_mask_BT=np.asarray(response_mask_BT)[rows],
                   weight_B=np.concatenate([weight, weight]))


def best_worst(scores_B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per group of k consecutive rows (one prompt's samples): the best and worst row.

  Returns (chosen_P, rejected_P, weight_P) with P = B / k; weight is 0 where the
  group's scores are all equal (no preference), else 1. Ties go to the first row.
  """
  s = np.asarray(scores_B, np.float64)
  if s.ndim != 1 or len(s) % k:
    raise ValueError(f'best_worst: {s.shape} scores; expected (B,) with B a multiple of k={k}')
  s_Gk = s.reshape(-1, k)
  base = np.arange(s_Gk.shape[0]) * k
  chosen = base + np.argmax(s_Gk, axis=1)
  rejected = base + np.argmin(s_Gk, axis=1)
  weight = (s_Gk.max(axis=1) > s_Gk.min(axis=1)).astype(np.float32)
  return chosen, rejected, weight


def online_batch(rows: ScoreBatch, scores_B: np.ndarray, k: int):
  """DPO batch from a two-turn rollout's score rows: best vs worst of each prompt's k.

  The response is both attempts (y1 and y2 tokens); the correction instruction
  between them is context, not scored. Also returns the chosen / rejected rows.
  """
  chosen, rejected, weight = best_worst(scores_B, k)
  response = np.asarray(rows.y1_mask_BT) | np.asarray(rows.y2_mask_BT)
  batch = dpo_batch(rows.tokens_BT, rows.valid_BT, response, chosen, rejected, weight)
  return batch, chosen, rejected


def pack_pairs(exp, pairs: Sequence[PreferencePair]) -> PairBatch:
  """Offline pairs as one DPO batch of 2N single-attempt rows (loss on the response).

  `exp`: an Experiment (its tokenizer, prompt format and trace length).
  """
  from score_jax.training import base_sft as base_sft_lib  # pylint: disable=g-import-not-at-top
  end = exp.prompt_format.turn_end_ids(exp.tokenizer)
  turn = lambda text: exp.tokenizer.encode(text) + end
  prompts = [p.prompt for p in pairs] * 2
  responses = [turn(p.chosen) for p in pairs] + [turn(p.rejected) for p in pairs]
  traces = base_sft_lib.pack(exp, prompts, responses, None)
  n = len(pairs)
  return dpo_batch(traces.tokens_BT, traces.valid_BT, traces.y1_mask_BT, np.arange(n),
                   np.arange(n, 2 * n), np.ones(n, np.float32))
