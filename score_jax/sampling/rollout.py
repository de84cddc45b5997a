"""The Sampler: jitted one-turn generation and two-turn self-correction rollouts.

Slot layout of one episode's KV cache (S = P + M1 + C + M2, all static):

    [ x: P (bucketed prompt) | y1: M1 | p: C (correction chunk) | y2: M2 ]

y1 is decoded into its slots, the chunk is appended to the SAME cache and y2 is
decoded after it: x and y1 are prefilled once. Rows that stopped early leave
invalid slots behind, masked out. With a given y1 (first attempts sampled
elsewhere, or repair evaluation) [x, y1] is prefilled in one forward instead.

Jitted pieces, compiled once per (batch, bucket) shape and public for callers
that drive turns themselves: `prefill` (fresh state), `extend` (append tokens,
state donated), `decode` (while loop, state donated); then the packing of the
trace. Each bumps `trace_counts[name]` when it is traced, so a test can see
recompiles. Params may carry any sharding: jit follows the inputs.
"""
from __future__ import annotations

import collections
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import struct

from score_jax.sampling import decode as dec
from score_jax.sampling import trace as tr
from score_jax.sampling.config import SamplingConfig


@struct.dataclass
class Generation:
  """One turn per row: ids right-padded with pad_id to the budget M."""
  tokens_BM: jax.Array          # int32, incl. the stop token
  logprob_BM: jax.Array         # float32, log-softmax of the raw logits (temperature 1)
  dist_logprob_BM: jax.Array    # float32, under the rule drawn from; 0 for greedy
  len_B: jax.Array              # int32, tokens generated (incl. the stop token)
  stop_B: jax.Array             # int32, 0 = stop token, 1 = budget

  def ids(self, strip_stop: bool = True) -> list[list[int]]:
    """Host lists of each row's tokens, without the stop token by default."""
    tokens_BM, len_B, stop_B = map(np.asarray, (self.tokens_BM, self.len_B, self.stop_B))
    out = []
    for row, n, stop in zip(tokens_BM, len_B, stop_B):
      if strip_stop and stop == 0 and n > 0:
        n -= 1
      out.append(row[:n].tolist())
    return out


def _host_2d(x, name: str, dtype) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'Sampler: {name} has shape {x.shape}; expected (batch, length)')
  return x.astype(dtype)


def _fit(x_BL: np.ndarray, width: int, fill) -> np.ndarray:
  """Cuts or right-pads the second axis to width."""
  if x_BL.shape[1] >= width:
    return x_BL[:, :width]
  return np.pad(x_BL, ((0, 0), (0, width - x_BL.shape[1])), constant_values=fill)


class Sampler:
  """Samples from a Transformer given as (graphdef, params); holds the jit cache."""

  def __init__(self, graphdef: nnx.GraphDef, cfg: SamplingConfig):
    self.graphdef = graphdef
    self.cfg = cfg
    self.trace_counts: collections.Counter[str] = collections.Counter()
    g = graphdef
    rule = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                stop_ids=cfg.stop_ids, pad_id=cfg.pad_id)

    def prefill(params, tokens_BT, mask_BT, num_slots, score=True):
      self.trace_counts['prefill'] += 1
      return dec.prefill(g, params, tokens_BT, mask_BT, num_slots, score=score)

    def extend(params, state, tokens_BT, mask_BT, start, merge_first, score=True):
      self.trace_counts['extend'] += 1
      return dec.extend(g, params, state, tokens_BT, mask_BT, start, merge_first,
                        score=score)

    def decode(params, state, key, start, num_steps):
      self.trace_counts['decode'] += 1
      return dec.decode(g, params, state, key, start, num_steps, **rule)

    def generation(state, len_B, stop_B, start, length):
      self.trace_counts['generation'] += 1
      sl = lambda x: jax.lax.slice_in_dim(x, start, start + length, axis=1)
      valid_BM = sl(state.valid_BS)
      return Generation(
          tokens_BM=jnp.where(valid_BM, sl(state.tokens_BS), cfg.pad_id),
          logprob_BM=jnp.where(valid_BM, sl(state.logprob_BS), 0.0),
          dist_logprob_BM=jnp.where(valid_BM, sl(state.dist_logprob_BS), 0.0),
          len_B=len_B, stop_B=stop_B)

    def pack(state, y1_stop_B, y2_stop_B, layout, length):
      self.trace_counts['pack'] += 1
      return tr.pack_slots(state.tokens_BS, state.valid_BS, tr.segments(*layout),
                           state.logprob_BS, state.dist_logprob_BS, y1_stop_B,
                           y2_stop_B, length, cfg.pad_id)

    # prefill(params, tokens_BT, mask_BT, num_slots, score=True) -> DecodeState
    # extend(params, state, tokens_BT, mask_BT, start, merge_first, score=True)
    #   -> DecodeState; score=False: the new tokens' log-probs are not computed (0)
    # decode(params, state, key, start, num_steps) -> (DecodeState, len_B, stop_B)
    self.prefill = jax.jit(prefill, static_argnames=('num_slots', 'score'))
    self.extend = jax.jit(extend, static_argnames=('merge_first', 'score'),
                          donate_argnums=1)
    self.decode = jax.jit(decode, donate_argnums=1)
    self._generation = jax.jit(generation, static_argnames=('start', 'length'))
    self._pack = jax.jit(pack, static_argnames=('layout', 'length'))

  def _prompts(self, prompt_ids_BP, prompt_mask_BP) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads the prompts to their bucket (trailing all-pad columns dropped)."""
    ids = _host_2d(prompt_ids_BP, 'prompt_ids_BP', np.int32)
    mask = _host_2d(prompt_mask_BP, 'prompt_mask_BP', bool)
    if ids.shape != mask.shape:
      raise ValueError(f'Sampler: prompt_ids_BP {ids.shape} and prompt_mask_BP '
                       f'{mask.shape} differ; expected the same shape')
    used = np.flatnonzero(mask.any(axis=0))
    p = self.cfg.bucket(int(used[-1]) + 1 if used.size else 1)
    return _fit(ids, p, self.cfg.pad_id), _fit(mask, p, False)

  def generate(self, params: nnx.State, prompt_ids_BP, prompt_mask_BP, key: jax.Array,
               max_tokens: int | None = None) -> Generation:
    """One turn: up to max_tokens (default max_y1_tokens) tokens per prompt.

    Draws with fold_in(key, 1), like the first turn of `rollout`.
    """
    x_BP, m_BP = self._prompts(prompt_ids_BP, prompt_mask_BP)
    p, m = x_BP.shape[1], max_tokens or self.cfg.max_y1_tokens
    state = self.prefill(params, x_BP, m_BP, num_slots=p + m, score=False)
    state, len_B, stop_B = self.decode(params, state, jax.random.fold_in(key, 1), p, m)
    return self._generation(state, len_B, stop_B, start=p, length=m)

  def rollout(self, params: nnx.State, prompt_ids_BP, prompt_mask_BP,
              chunk_ids: Sequence[int] | np.ndarray, key: jax.Array,
              y1_ids_BM=None, y1_mask_BM=None) -> tr.CorrectionTrace:
    """Two turns: y1 ~ pi(.|x), then y2 ~ pi(.|[x, y1, p]) from the same cache.

    chunk_ids: (C,) or (B, C) ids of p, e.g. the encoding of
    "<end_of_turn>\\n<start_of_turn>user\\n{instruction}<end_of_turn>\\n<start_of_turn>model\\n";
    its first token closes y1 and is dropped for rows whose y1 already ended on
    it. y1_ids_BM / y1_mask_BM (right-padded, M <= max_y1_tokens): a given first
    attempt, prefilled with x in one forward instead of sampled; its stop code
    is 0 when its last token is a stop id. Turn t draws with fold_in(key, t).
    Returns a trace of the static length cfg.trace_len(C).
    """
    cfg = self.cfg
    x_BP, m_BP = self._prompts(prompt_ids_BP, prompt_mask_BP)
    b, p = x_BP.shape
    m1, m2 = cfg.max_y1_tokens, cfg.max_y2_tokens
    chunk_BC = np.asarray(chunk_ids, np.int32)
    chunk_BC = np.broadcast_to(chunk_BC.reshape(-1, chunk_BC.shape[-1]),
                               (b, chunk_BC.shape[-1]))
    c = chunk_BC.shape[1]
    if c < 1:
      raise ValueError('Sampler.rollout: chunk_ids is empty; expected at least the '
                       'token that closes y1')
    num_slots = p + m1 + c + m2
    if y1_ids_BM is None:
      state = self.prefill(params, x_BP, m_BP, num_slots=num_slots, score=False)
      state, _, y1_stop_B = self.decode(params, state, jax.random.fold_in(key, 1),
                                         p, m1)
    else:
      y1_BM, y1m_BM = self._given_y1(y1_ids_BM, y1_mask_BM, b)
      state = self.prefill(params, np.concatenate([x_BP, y1_BM], 1),
                            np.concatenate([m_BP, y1m_BM], 1), num_slots=num_slots)
      last_B = np.take_along_axis(
          y1_BM, np.maximum(y1m_BM.sum(1) - 1, 0)[:, None], axis=1)[:, 0]
      hit_B = y1m_BM.any(1) & np.isin(last_B, cfg.stop_ids)
      y1_stop_B = np.where(hit_B, 0, 1).astype(np.int32)
    # Batch-padding rows (no prompt) get no chunk, so they never start turn 2.
    chunk_mask_BC = np.broadcast_to(m_BP.any(1, keepdims=True), (b, c))
    state = self.extend(params, state, chunk_BC, chunk_mask_BC, p + m1,
                         merge_first=True, score=False)
    state, _, y2_stop_B = self.decode(params, state, jax.random.fold_in(key, 2),
                                       p + m1 + c, m2)
    return self._pack(state, y1_stop_B, y2_stop_B, layout=(p, m1, c, m2),
                      length=cfg.trace_len(c))

  def _given_y1(self, y1_ids_BM, y1_mask_BM, b: int) -> tuple[np.ndarray, np.ndarray]:
    if y1_mask_BM is None:
      raise ValueError('Sampler.rollout: y1_ids_BM given without y1_mask_BM')
    y1 = _host_2d(y1_ids_BM, 'y1_ids_BM', np.int32)
    y1m = _host_2d(y1_mask_BM, 'y1_mask_BM', bool)
    m1 = self.cfg.max_y1_tokens
    if y1.shape != y1m.shape or y1.shape[0] != b:
      raise ValueError(f'Sampler.rollout: y1_ids_BM {y1.shape}, y1_mask_BM {y1m.shape}; '
                       f'expected both ({b}, M)')
    if y1m[:, m1:].any():
      raise ValueError(f'Sampler.rollout: a given y1 is longer than max_y1_tokens={m1}')
    if (y1m[:, 1:] & ~y1m[:, :-1]).any():
      raise ValueError('Sampler.rollout: y1_mask_BM is not right-padded')
    return _fit(y1, m1, self.cfg.pad_id), _fit(y1m, m1, False)
