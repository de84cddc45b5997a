"""The online SCoRe loop, on explicit parts. One step, top to bottom (`_step`):

  1. prompts: the next PromptBatch of the data iterator (grain), k rows each;
  2. two attempts from the policy, scored by the task's reward (attempts.py:
     the sampler's rollout [x, y1, p, y2] from one KV cache, decode, reward);
     Stage II adds rows whose y1 the base model sampled (the paper's trick); a
     `dpo` stage turns each prompt's best and worst attempt into a pair;
  3. the update: host rows -> global arrays, one policy + one reference forward
     and the stage's loss (step.py, losses.py), AdamW;
  4. metrics (metric_log.py) and, on schedule or on SIGTERM, a checkpoint.

`ScoreParts` holds the parts; build.py makes them from a config (Experiment),
and a user can make them by hand. The loop calls only its parts.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from absl import logging
from flax import nnx

from score_jax import batches as batches_lib
from score_jax.batches import PromptBatch, ScoreBatch
from score_jax.training import sharding as sh
from score_jax.training.attempts import Attempts, TwoAttempts, process_key
from score_jax.training.checkpoint import Checkpointer
from score_jax.training.metric_log import MetricsWriter, finite_or_raise, progress
from score_jax.training.preemption import Preempted, StopOnSignal
from score_jax.training.state import TrainState

# (stage, state, ref_params, global batch) -> (state, metrics): the jitted update.
UpdateFn = Callable[[str, TrainState, nnx.State, Any], tuple[TrainState, dict]]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """The loop's settings; build.score_parts fills them from config.train."""
  schedule: Sequence[tuple[str, int]]   # (stage, steps) segments, run in order
  samples_per_prompt: int               # k attempts per prompt
  sample_seed: int                      # step s samples with fold_in(key(sample_seed), s)
  base_y1_fraction: float = 0.0         # Stage II: extra rows with the base model's y1
  log_every: int = 1
  phase: str = 'score'
  checkpoint_meta: dict = dataclasses.field(default_factory=dict)  # saved with each step


@dataclasses.dataclass
class ScoreParts:
  """What the loop runs on. `policy(trained)` -> the policy's params (LoRA: merged)."""
  attempts: TwoAttempts                     # sampler + correction chunk + task reward
  examples: Sequence[Any]                   # the training split: examples[index]
  data: Iterator[PromptBatch]               # with get_state / set_state (grain)
  update: UpdateFn
  to_global: Callable[[Any], Any]           # host rows -> arrays over the mesh
  for_sampling: Callable[[nnx.State], nnx.State]   # -> the sampler's process-local copy
  policy: Callable[[nnx.State], nnx.State]
  checkpointer: Checkpointer
  writer: MetricsWriter
  pairs: Any = None                         # preference.online.OnlinePairs (dpo stages)


def stage_at(schedule: Sequence[tuple[str, int]], step: int) -> str | None:
  """The stage that global step `step` (0-based) belongs to; None past the end."""
  for stage, n in schedule:
    if step < n:
      return stage
    step -= n
  return None


def base_y1_rows(parts: ScoreParts, base_sample: nnx.State, policy_sample: nnx.State,
                 prompts: PromptBatch, key: jax.Array, k: int, fraction: float):
  """Stage II's extra rows: y1 sampled by the base model, y2 by the policy (or None)."""
  n = int(round(fraction * batches_lib.num_rows(prompts)))
  if n == 0:
    return None
  sub = prompts.head(n).repeat(k)
  gen = parts.attempts.sampler.generate(base_sample, sub.ids_BP, sub.mask_BP,
                                        process_key(jax.random.fold_in(key, 7)))
  y1_BM = np.asarray(gen.tokens_BM)
  y1_mask_BM = np.arange(y1_BM.shape[1])[None, :] < np.asarray(gen.len_B)[:, None]
  return parts.attempts(policy_sample, sub, parts.examples, jax.random.fold_in(key, 8),
                        y1_ids_BM=y1_BM, y1_mask_BM=y1_mask_BM)


def _rows(parts: ScoreParts, cfg: LoopConfig, stage: str, state: TrainState, base_sample,
          prompts: PromptBatch, key: jax.Array):
  """(attempts, the update's host rows, pair stats) of one step."""
  k = cfg.samples_per_prompt
  policy_sample = parts.for_sampling(parts.policy(state.params))
  attempts = parts.attempts(policy_sample, prompts.repeat(k), parts.examples, key)
  if stage == 'dpo':
    return (attempts, *parts.pairs.batch(attempts, prompts, parts.examples, k))
  rows: ScoreBatch = attempts.score_batch()
  if stage == 'stage2' and cfg.base_y1_fraction > 0:
    extra = base_y1_rows(parts, base_sample(), policy_sample, prompts, key, k,
                         cfg.base_y1_fraction)
    if extra is not None:
      rows = batches_lib.concat(rows, extra.score_batch())
  return attempts, rows, {}


def _metrics(host: dict, stage: str, attempts: Attempts, rows: int, pair_stats: dict,
             update_s: float) -> dict:
  """The step's logged row. Rewards are per process; every process logs and ranks
  checkpoints by the mean over all of them (one small all-gather)."""
  acc_t1, acc_t2 = sh.global_mean(attempts.r1_B), sh.global_mean(attempts.r2_B)
  return dict(host, **pair_stats, stage=stage, acc_t1=acc_t1, acc_t2=acc_t2, rows=float(rows),
              time_sampling_s=attempts.sample_s, time_rewards_s=attempts.reward_s,
              time_update_s=update_s)


def _step(parts: ScoreParts, cfg: LoopConfig, state: TrainState, ref_params, base_sample,
          step: int):
  """One SCoRe step: prompts -> two scored attempts -> one update.

  Returns (state, the logged row, the step's prompt indices)."""
  stage, prompts = stage_at(cfg.schedule, step), next(parts.data)
  key = jax.random.fold_in(jax.random.key(cfg.sample_seed), step)
  attempts, rows, pair_stats = _rows(parts, cfg, stage, state, base_sample, prompts, key)
  t0 = time.perf_counter()
  state, metrics = parts.update(stage, state, ref_params, parts.to_global(rows))
  host = finite_or_raise(metrics, f'{cfg.phase}/{stage}', step)
  host = _metrics(host, stage, attempts, batches_lib.num_rows(rows), pair_stats,
                  time.perf_counter() - t0)
  return state, host, np.asarray(prompts.index_B).tolist()


def run(parts: ScoreParts, cfg: LoopConfig, state: TrainState, ref_params: nnx.State, *,
        start: int, end: int, on_log: Callable[[int, dict], None] | None = None
        ) -> tuple[TrainState, list[dict]]:
  """Steps start..end-1 of the schedule; returns (state, one logged row per step).

  ref_params is also the base model of Stage II's base-y1 rows; its sampler copy
  is made on first use. SIGTERM / SIGINT: save this step, then raise Preempted
  (exit 0).
  """
  base_sample = functools.cache(lambda: parts.for_sampling(ref_params))
  total = sum(n for _, n in cfg.schedule)
  history, window, every = [], [], max(cfg.log_every, 1)
  bar = progress(total, cfg.phase, initial=start)
  with StopOnSignal() as stop:
    try:
      for step in range(start + 1, end + 1):
        state, host, prompt_index = _step(parts, cfg, state, ref_params, base_sample, step - 1)
        history.append(dict(host, step=step, prompts=prompt_index))
        window = (window + [(host['acc_t1'] + host['acc_t2']) / 2])[-every:]
        if step % every == 0 or step == total:
          parts.writer.write(cfg.phase, step, host)
          if on_log is not None:
            on_log(step, host)
        bar.set_postfix(stage=host['stage'], t1=f'{host["acc_t1"]:.2f}',
                        t2=f'{host["acc_t2"]:.2f}')
        bar.update(1)
        _save_or_stop(parts, cfg, state, step, end, total, stop, float(np.mean(window)),
                      host['stage'])
    finally:
      bar.close()
  return state, history


def _save_or_stop(parts: ScoreParts, cfg: LoopConfig, state, step: int, end: int,
                  total: int, stop: StopOnSignal, train_reward: float, stage: str) -> None:
  """A checkpoint on schedule or on a signal; after a signal, Preempted."""
  signalled = stop.requested()   # collective: every process stops at this step
  if parts.checkpointer.should_save(step, step == end) or signalled:
    parts.checkpointer.save(step, state, parts.data.get_state(),
                            dict(cfg.checkpoint_meta, step=step, stage=stage),
                            train_reward=train_reward)
  if signalled and step != end:
    message = (f'{cfg.phase}: {stop.received or "another process was signalled"}; saved '
               f'step {step} of {total}; rerun the same command to resume')
    logging.warning('%s', message)
    raise Preempted(message)
