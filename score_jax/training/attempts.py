"""Two attempts at a batch of prompts, scored by the task's reward on the host.

`TwoAttempts` is what a SCoRe step does before its update: the sampler's rollout
(y1, then the correction instruction, then y2, from one KV cache), decoding each
attempt to text, and the task's reward of each text. "Rollout" names only the
sampling (sampling.rollout.Sampler.rollout -> a CorrectionTrace); `Attempts` is a
rollout plus its rewards.

Several processes: each samples and scores its own prompt rows with a
process-local copy of the weights and its own random stream (`process_key`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import struct

from score_jax.data.prompt_format import PromptFormat
from score_jax.data.tokenizer import Tokenizer
from score_jax.sampling import trace as trace_lib
from score_jax.sampling.rollout import Sampler
from score_jax.training import sharding as sh
from score_jax.batches import PromptBatch, ScoreBatch

# (examples, response texts) -> one reward per text; a Task's `rewards`.
RewardFn = Callable[[Sequence[Any], Sequence[str]], Sequence[float]]


@struct.dataclass
class Attempts:
  """Two attempts per prompt row, scored on the host."""
  trace: trace_lib.CorrectionTrace   # the rollout: [x, y1, p, y2], packed
  r1_B: np.ndarray                   # float32 reward of y1 (0 on padding rows)
  r2_B: np.ndarray                   # float32 reward of y2
  real_B: np.ndarray                 # bool: a real prompt row (False: batch padding)
  y1_ids: list = struct.field(pytree_node=False, default_factory=list)  # B lists of ids
  y2_ids: list = struct.field(pytree_node=False, default_factory=list)
  sample_s: float = struct.field(pytree_node=False, default=0.0)  # sampling wall time
  reward_s: float = struct.field(pytree_node=False, default=0.0)  # reward wall time

  def score_batch(self) -> ScoreBatch:
    """The rows of a Stage I / II update."""
    t = self.trace
    return ScoreBatch(tokens_BT=np.asarray(t.tokens_BT), valid_BT=np.asarray(t.valid_BT),
                      y1_mask_BT=np.asarray(t.y1_mask_BT), y2_mask_BT=np.asarray(t.y2_mask_BT),
                      r1_B=self.r1_B.astype(np.float32), r2_B=self.r2_B.astype(np.float32))


def process_key(key: jax.Array) -> jax.Array:
  """This process's sampling stream: key folded with the process index (if > 1)."""
  return key if jax.process_count() == 1 else jax.random.fold_in(key, jax.process_index())


@dataclasses.dataclass(frozen=True)
class TwoAttempts:
  """Samples and scores two attempts: a sampler, the correction chunk, a reward."""
  sampler: Sampler
  chunk_ids: Sequence[int]                    # the correction instruction's turn, p
  tokenizer: Tokenizer
  prompt_format: PromptFormat                 # strips the turn's end marker off a response
  reward: RewardFn

  def decode(self, ids: Sequence[int]) -> str:
    """An attempt's token ids -> its response text, as the reward reads it."""
    return self.prompt_format.response_text(self.tokenizer.decode(ids))

  def __call__(self, params, prompts: PromptBatch, examples: Sequence[Any],
               key: jax.Array, *, y1_ids_BM=None, y1_mask_BM=None) -> Attempts:
    """y1 then y2 for each prompt row, and both rewards.

    `params`: process-local weights (sharding.to_process_local). `examples[i]` is
    the example of index i. y1_ids_BM / y1_mask_BM: a given first attempt (see
    Sampler.rollout), e.g. the base model's, instead of a sampled one.
    """
    if not sh.is_process_local(params):
      raise ValueError('TwoAttempts: params span several processes; expected '
                       'process-local weights (Experiment.for_sampling(params))')
    t0 = time.perf_counter()
    trace = self.sampler.rollout(params, prompts.ids_BP, prompts.mask_BP, self.chunk_ids,
                                 process_key(key), y1_ids_BM=y1_ids_BM, y1_mask_BM=y1_mask_BM)
    y1 = trace_lib.turn_ids(trace, 1)   # blocks until sampling is done
    t1 = time.perf_counter()
    y2 = trace_lib.turn_ids(trace, 2)
    index_B = np.asarray(prompts.index_B)
    real_B = index_B >= 0
    r1_B, r2_B = self.score(y1, examples, index_B), self.score(y2, examples, index_B)
    return Attempts(trace, r1_B, r2_B, real_B, y1, y2, sample_s=t1 - t0,
                    reward_s=time.perf_counter() - t1)

  def score(self, ids: Sequence[Sequence[int]], examples: Sequence[Any],
            index_B: np.ndarray) -> np.ndarray:
    """(B,) float32 rewards of one attempt's rows; 0 on padding rows (index -1)."""
    r_B = np.zeros(len(index_B), np.float32)
    real = np.flatnonzero(index_B >= 0)
    if len(real):
      r_B[real] = self.reward([examples[index_B[i]] for i in real],
                              [self.decode(ids[i]) for i in real])
    return r_B
