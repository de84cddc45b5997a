"""CorrectionTrace: a two-turn episode [x, y1, p, y2], packed for one training forward.

The sampler writes the episode into cache slots with gaps (prompt padding, steps
after a row stopped, a dropped chunk token). `pack_slots` moves the valid slots to
the front of each row, in order, and right-pads to a static length, so the trainer
runs ONE forward with positions = arange and mask = causal & valid. The token at
index t is predicted by the logits at t - 1; y1_mask_BT / y2_mask_BT mark the targets.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PROMPT, Y1, CHUNK, Y2 = 0, 1, 2, 3   # segment ids of slots


@struct.dataclass
class CorrectionTrace:
  """Packed episodes, right-padded with pad_id to T. Stop codes: 0 stop token, 1 budget."""
  tokens_BT: jax.Array           # int32: x (incl. bos), y1, p, y2, then pad_id
  valid_BT: jax.Array            # bool: a real token (a prefix of each row)
  prompt_mask_BT: jax.Array      # bool: x
  y1_mask_BT: jax.Array          # bool: y1 tokens (incl. its stop token)
  chunk_mask_BT: jax.Array       # bool: p (its first token dropped where y1 ended on it)
  y2_mask_BT: jax.Array          # bool: y2 tokens (incl. its stop token)
  # log pi(token | everything before) under the raw logits (temperature 1) of the
  # policy that sampled, at the token's own index; 0 outside y1 / y2. For a given
  # (not sampled) y1 it is the sampling policy's score of that y1.
  sample_logprob_BT: jax.Array   # float32
  # Log-prob under the distribution actually drawn from (temperature / top-k /
  # top-p applied); 0 for greedy and for tokens that were not sampled.
  dist_logprob_BT: jax.Array     # float32
  prompt_len_B: jax.Array        # int32
  y1_len_B: jax.Array            # int32
  chunk_len_B: jax.Array         # int32
  y2_len_B: jax.Array            # int32
  y1_stop_B: jax.Array           # int32
  y2_stop_B: jax.Array           # int32


def pack_slots(tokens_BS: jax.Array, valid_BS: jax.Array, segment_S: np.ndarray,
               logprob_BS: jax.Array, dist_logprob_BS: jax.Array,
               y1_stop_B: jax.Array, y2_stop_B: jax.Array, length: int,
               pad_id: int) -> CorrectionTrace:
  """Packs slot arrays (valid slots first, order kept) into a trace of `length`.

  segment_S (static numpy): PROMPT / Y1 / CHUNK / Y2 per slot. Valid slots beyond
  `length` are dropped: callers make length >= the number of valid slots.
  """
  b, s = valid_BS.shape
  width = max(s, length)
  pad = lambda x, v: jnp.pad(x, ((0, 0), (0, width - s)), constant_values=v)
  seg_BS = jnp.broadcast_to(jnp.asarray(segment_S, jnp.int32)[None], (b, s))
  valid_BW = pad(valid_BS.astype(bool), False)
  order_BT = jnp.argsort((~valid_BW).astype(jnp.int32), axis=1, stable=True)[:, :length]
  take = lambda x, v: jnp.take_along_axis(pad(x, v), order_BT, axis=1)
  valid_BT = take(valid_BS.astype(bool), False)
  seg_BT = take(seg_BS, -1)
  masks = [valid_BT & (seg_BT == k) for k in (PROMPT, Y1, CHUNK, Y2)]
  target_BT = masks[Y1] | masks[Y2]
  count = lambda m: jnp.sum(m, axis=1, dtype=jnp.int32)
  return CorrectionTrace(
      tokens_BT=jnp.where(valid_BT, take(tokens_BS.astype(jnp.int32), pad_id), pad_id),
      valid_BT=valid_BT,
      prompt_mask_BT=masks[PROMPT], y1_mask_BT=masks[Y1],
      chunk_mask_BT=masks[CHUNK], y2_mask_BT=masks[Y2],
      sample_logprob_BT=jnp.where(target_BT, take(logprob_BS, 0.0), 0.0),
      dist_logprob_BT=jnp.where(target_BT, take(dist_logprob_BS, 0.0), 0.0),
      prompt_len_B=count(masks[PROMPT]), y1_len_B=count(masks[Y1]),
      chunk_len_B=count(masks[CHUNK]), y2_len_B=count(masks[Y2]),
      y1_stop_B=jnp.asarray(y1_stop_B, jnp.int32),
      y2_stop_B=jnp.asarray(y2_stop_B, jnp.int32))


def segments(prompt_len: int, y1_len: int, chunk_len: int, y2_len: int) -> np.ndarray:
  """segment_S of the slot layout [prompt | y1 | chunk | y2]."""
  return np.repeat(np.array([PROMPT, Y1, CHUNK, Y2], np.int32),
                   [prompt_len, y1_len, chunk_len, y2_len])


def turn_ids(trace: CorrectionTrace, turn: int) -> list[list[int]]:
  """The y1 (turn=1) or y2 (turn=2) token ids of each row, stop token stripped."""
  if turn not in (1, 2):
    raise ValueError(f'turn_ids: turn={turn}; expected 1 or 2')
  tokens_BT = np.asarray(trace.tokens_BT)
  mask_BT = np.asarray(trace.y1_mask_BT if turn == 1 else trace.y2_mask_BT)
  stop_B = np.asarray(trace.y1_stop_B if turn == 1 else trace.y2_stop_B)
  out = []
  for row_T, m_T, stop in zip(tokens_BT, mask_BT, stop_B):
    ids = row_T[m_T].tolist()
    out.append(ids[:-1] if stop == 0 and ids else ids)
  return out


def _right_pad(seqs: Sequence[Sequence[int]], width: int, pad_id: int, field: str):
  ids = np.full((len(seqs), width), pad_id, np.int32)
  mask = np.zeros((len(seqs), width), bool)
  for b, seq in enumerate(seqs):
    if any(not 0 <= int(t) for t in seq):
      raise ValueError(f'pack_traces: {field}[{b}] has a negative token id')
    ids[b, :len(seq)] = seq
    mask[b, :len(seq)] = True
  return ids, mask


def pack_traces(prompts: Sequence[Sequence[int]], y1s: Sequence[Sequence[int]],
                chunk: Sequence[int], y2s: Sequence[Sequence[int]] | None,
                pad_id: int, length: int,
                stop_ids: Sequence[int] = ()) -> CorrectionTrace:
  """A CorrectionTrace from token lists (offline traces: Pair-SFT, STaR, ...).

  y1s / y2s include their stop token when they have one; a turn whose last token
  is in stop_ids gets stop code 0, else 1. Like the sampler, chunk[0] is dropped
  for rows whose y1 already ends with it. y2s=None: no second turn. Log-prob
  fields are 0. Raises ValueError when a row does not fit in `length`.
  """
  b = len(prompts)
  y2s = [[] for _ in range(b)] if y2s is None else y2s
  if not len(y1s) == len(y2s) == b:
    raise ValueError(f'pack_traces: {b} prompts, {len(y1s)} y1s, {len(y2s)} y2s; '
                     'expected one of each per row')
  width = lambda seqs: max([len(s) for s in seqs] + [0])
  x_BP, xm_BP = _right_pad(prompts, width(prompts), pad_id, 'prompts')
  y1_BM, y1m_BM = _right_pad(y1s, width(y1s), pad_id, 'y1s')
  y2_BN, y2m_BN = _right_pad(y2s, width(y2s), pad_id, 'y2s')
  c_BC, cm_BC = _right_pad([list(chunk)] * b, len(chunk), pad_id, 'chunk')
  if len(chunk):
    cm_BC[:, 0] = [not (len(y) and y[-1] == chunk[0]) for y in y1s]
  valid_BS = np.concatenate([xm_BP, y1m_BM, cm_BC, y2m_BN], axis=1)
  too_long = np.flatnonzero(valid_BS.sum(1) > length)
  if too_long.size:
    raise ValueError(f'pack_traces: row {too_long[0]} has '
                     f'{valid_BS[too_long[0]].sum()} tokens; length={length}')
  stops = set(int(t) for t in stop_ids)
  stop = lambda seqs: np.array([0 if len(s) and int(s[-1]) in stops else 1
                                for s in seqs], np.int32)
  zeros = np.zeros(valid_BS.shape, np.float32)
  return pack_slots(
      np.concatenate([x_BP, y1_BM, c_BC, y2_BN], axis=1), valid_BS,
      segments(x_BP.shape[1], y1_BM.shape[1], c_BC.shape[1], y2_BN.shape[1]),
      zeros, zeros, stop(y1s), stop(y2s), length, pad_id)
