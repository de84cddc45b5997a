"""The typed batches of the data path: pytree dataclasses with shape-named fields.

  PromptBatch  what the prompt pipeline yields: this process's prompt rows.
  ScoreBatch   a Stage I / II step's rows: packed [x, y1, p, y2] traces + rewards.
  SftBatch     a supervised step's rows (base SFT, STaR, Pair-SFT).
  PairBatch    a DPO step's rows: P chosen rows, then their P rejected rows.

Token rows are packed and right-padded to one width T. Every field is an array
(numpy on the host, jax.Array once placed on the mesh), so `jax.tree.map` moves
a whole batch (sharding.host_local_batch_to_global) and jit reads its structure.
"""
from __future__ import annotations

from typing import TypeVar

import jax
import numpy as np
from flax import struct

Array = np.ndarray | jax.Array


@struct.dataclass
class PromptBatch:
  ids_BP: Array     # int32 prompt tokens, right-padded to a length bucket P
  mask_BP: Array    # bool: real prompt tokens
  index_B: Array    # int32: example index in the split; -1 marks a padding row

  def repeat(self, k: int) -> PromptBatch:
    """Each row k times in a row (k samples per prompt)."""
    return jax.tree.map(lambda x: np.repeat(np.asarray(x), k, axis=0), self)

  def head(self, n: int) -> PromptBatch:
    return jax.tree.map(lambda x: np.asarray(x)[:n], self)


@struct.dataclass
class ScoreBatch:
  tokens_BT: Array    # int32 [x, y1, p, y2]
  valid_BT: Array     # bool: not padding
  y1_mask_BT: Array   # bool: the tokens the first attempt generated
  y2_mask_BT: Array   # bool: the tokens the second attempt generated
  r1_B: Array         # float32 reward of y1
  r2_B: Array         # float32 reward of y2


@struct.dataclass
class SftBatch:
  tokens_BT: Array
  valid_BT: Array
  target_mask_BT: Array   # bool: the tokens the loss is taken on


@struct.dataclass
class PairBatch:
  tokens_BT: Array          # 2P rows: P chosen, then the P rejected in the same order
  valid_BT: Array
  response_mask_BT: Array   # bool: the response tokens (scored in the sequence log-prob)
  weight_B: Array           # float32 per-pair weight, repeated over both halves


Batch = TypeVar('Batch', ScoreBatch, SftBatch, PairBatch, PromptBatch)


def concat(a: Batch, b: Batch) -> Batch:
  """a's rows, then b's (host arrays)."""
  return jax.tree.map(lambda x, y: np.concatenate([np.asarray(x), np.asarray(y)]), a, b)


def num_rows(batch) -> int:
  return int(jax.tree.leaves(batch)[0].shape[0])
