"""Training entry points: SCoRe's stage schedule (`train_score`) and the supervised
loop (base SFT, STaR, Pair-SFT: `train_sft`).

train_score builds the loop's parts from the config (build.py) and runs the
loop (loop.py, where one SCoRe step reads top to bottom). A `dpo` stage samples
the same way, scores each prompt's k episodes (config.dpo.scorer) and takes a
DPO step on the best vs the worst of them.
The stage schedule is a list of (stage, steps) segments run in order; the
checkpoint stores the global step, so a resumed run re-enters the right segment
and the data iterator continues where it stopped. A resume first checks the
checkpoint against this run (shapes and config fingerprint, see resume.py);
SIGTERM / SIGINT save the current step and exit 0 (preemption.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from score_jax import config as config_lib
from score_jax.batches import SftBatch
from score_jax.sampling import trace as trace_lib
from score_jax.training import build
from score_jax.training import loop as loop_lib
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from score_jax.training.experiment import Experiment, to_global
from score_jax.training.metric_log import MetricsWriter, finite_or_raise, progress


@dataclasses.dataclass
class ScoreResult:
  params: nnx.State                  # the policy's full params (LoRA: merged)
  steps: int
  history: list[dict]
  adapters: nnx.State | None = None  # with config.lora: what was trained


def check_resume(exp: Experiment, *, phase: str = 'score', schedule=None, seed=None,
                 workdir=None) -> int | None:
  """train_score's resume checks, before any work: they read checkpoint metadata only.

  Raises checkpoint.ResumeRefused (a UserError, one line) when the workdir's
  checkpoint is of another model or config; sets damaged steps aside. Returns the
  step train_score would resume from (None: a fresh start). Launchers call it
  before building the base model, so a doomed resume costs no base SFT.
  """
  p = build.plan(exp, schedule, seed, workdir, phase)
  abstract = build.abstract_params(exp)
  shardings = state_lib.state_shardings(abstract, p.tx, exp.mesh, exp.strategy.rules)
  state = jax.eval_shape(lambda a: state_lib.init_train_state(
      a, p.tx, jax.random.key(p.seed), shardings), abstract)
  ckpt = build.checkpointer(exp, p)
  try:
    start = build.resume(exp, p, ckpt, state, restore=False, abstract=abstract)[0]
  finally:
    ckpt.close()
  return start or None


def train_score(exp: Experiment, params: nnx.State, ref_params: nnx.State, *,
                schedule: Sequence[tuple[str, int]] | None = None,
                workdir=None, phase: str = 'score', seed: int | None = None,
                on_log: Callable[[int, dict], None] | None = None,
                stop_after: int | None = None, adapters=None) -> ScoreResult:
  """Runs the stage schedule from `params` against the frozen `ref_params`.

  build.score_parts makes the loop's parts from exp's config; loop.run runs it.
  Resumes from the newest intact checkpoint under `workdir` when
  config.checkpoint.resume, after check_resume's checks; metrics logged after
  that step are dropped, as the run writes them again. SIGTERM / SIGINT: save
  this step, then raise preemption.Preempted (exit code 0).

  With config.lora: trains adapters on the base `ref_params` (build.trainable).
  `stop_after`: end (with a checkpoint) after this many steps of this call, as if
  killed; used to test exact resumption.
  """
  p = build.plan(exp, schedule, seed, workdir, phase)
  parts, loop_cfg, state, ref_params, start, lora_scale = build.score_parts(
      exp, p, params, ref_params, adapters, phase)
  end = p.total if stop_after is None else min(p.total, start + stop_after)
  try:
    state, history = loop_lib.run(parts, loop_cfg, state, ref_params,
                                  start=start, end=end, on_log=on_log)
  finally:
    parts.checkpointer.wait()
    parts.checkpointer.close()
    parts.writer.close()
  return ScoreResult(params=parts.policy(state.params), steps=start + len(history),
                     history=history, adapters=state.params if lora_scale is not None else None)


# ----------------------------------------------------------------------------- SFT


def sft_batches(traces: trace_lib.CorrectionTrace, target_mask: np.ndarray,
                batch_size: int, seed: int):
  """Endless seeded minibatches of (tokens, valid, target_mask) from packed traces.

  batch_size rows per process: every process holds the same traces and draws the
  same global batch of batch_size * process_count rows; each keeps its own slice.
  """
  tokens = np.asarray(traces.tokens_BT)
  valid = np.asarray(traces.valid_BT)
  n = tokens.shape[0]
  rows = batch_size * jax.process_count()
  if n < rows:
    raise ValueError(f'SFT data has {n} traces; fewer than batch_size={batch_size} '
                     f'x {jax.process_count()} processes')
  mine = slice(jax.process_index() * batch_size, (jax.process_index() + 1) * batch_size)
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(n)
    for i in range(0, n - rows + 1, rows):
      idx = order[i:i + rows][mine]
      yield SftBatch(tokens_BT=tokens[idx], valid_BT=valid[idx], target_mask_BT=target_mask[idx])


def train_sft(exp: Experiment, params: nnx.State, traces: trace_lib.CorrectionTrace,
              target_mask: np.ndarray, *, steps: int, batch_size: int,
              learning_rate: float, seed: int = 0, phase: str = 'sft',
              warmup_steps: int = 0,
              stop_when: Callable[[int, nnx.State], dict | None] | None = None,
              check_every: int = 0) -> nnx.State:
  """Supervised fine-tuning on packed traces; loss only where target_mask is True.

  stop_when(step, params), called every `check_every` steps, ends training early
  by returning a dict of metrics (logged); None means go on. `steps` is the cap.
  """
  optim = dataclasses.replace(config_lib.optim_config(exp.cfg), learning_rate=learning_rate,
                              total_steps=steps, warmup_steps=warmup_steps,
                              grad_accum_steps=1)
  tx = state_lib.make_optimizer(optim)
  train_init, policy, lora_scale = build.trainable(exp.cfg, params, params, seed=seed)
  base = params if lora_scale is not None else None   # LoRA: the frozen base
  shardings = state_lib.state_shardings(train_init, tx, exp.mesh, exp.strategy.rules)
  state = state_lib.init_train_state(train_init, tx, jax.random.key(seed), shardings)
  writer = MetricsWriter(exp.workdir / phase)
  writer.rewind(phase, 0)   # a rerun (after a kill) starts over: its old lines go
  batches = sft_batches(traces, target_mask, batch_size, seed)
  fn = None
  bar = progress(steps, phase)
  try:
    for step in range(1, steps + 1):
      batch = to_global(next(batches), exp)
      if fn is None:
        fn = step_lib.compile_step(
            exp.graphdef, tx, None, 'sft', exp.mesh, exp.strategy.rules, shardings,
            None if base is None else exp.param_shardings(base), batch,
            lora_scale=lora_scale)
      state, metrics = fn(state, base, batch)
      if step % max(exp.cfg.train.log_every, 1) == 0 or step == steps:
        host = finite_or_raise(metrics, phase, step)
        writer.write(phase, step, host)
        bar.set_postfix(nll=f'{host["loss"]:.3f}')
      bar.update(1)
      if stop_when is not None and check_every and step % check_every == 0:
        done = stop_when(step, policy(state.params))
        if done is not None:
          writer.write(phase, step, dict(done, stopped_early=1.0))
          break
  finally:
    bar.close()
    writer.close()
  return policy(state.params)
