"""The online SCoRe loop and the supervised loop (warm-up, STaR, Pair-SFT).

One SCoRe step, top to bottom (`train_score`):
  prompts (grain) -> two attempts from the policy (sampler, same KV cache)
  -> rewards on the host (task) -> one policy + one reference forward over
  [x, y1, p, y2] and the Stage I or II loss (jitted step) -> AdamW update
  -> metrics (JSONL, TensorBoard, progress bar) -> Orbax checkpoint on schedule.
A `dpo` stage samples the same way, scores each prompt's k episodes
(config.dpo.scorer) and takes a DPO step on the best vs the worst of them.
The stage schedule is a list of (stage, steps) segments run in order; the
checkpoint stores the global step, so a resumed run re-enters the right segment
and the data iterator continues where it stopped. A resume first checks the
checkpoint against this run (shapes and config fingerprint, see resume.py);
SIGTERM / SIGINT save the current step and exit 0 (preemption.py).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Callable, Sequence

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx

from score_jax import config as config_lib
from score_jax.preference import online as online_lib
from score_jax.models import lora
from score_jax.sampling import trace as trace_lib
from score_jax.training import resume as resume_lib
from score_jax.training import sharding as sh
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from score_jax.training.checkpoint import Checkpointer, CheckpointConfig
from score_jax.training.experiment import Experiment, finite_or_raise, to_global
from score_jax.training.logging import MetricsWriter, progress
from score_jax.training.preemption import Preempted, StopOnSignal


def stage_at(schedule: Sequence[tuple[str, int]], step: int) -> str | None:
  """The stage that global step `step` (0-based) belongs to; None past the end."""
  for stage, n in schedule:
    if step < n:
      return stage
    step -= n
  return None


@dataclasses.dataclass
class ScoreResult:
  params: nnx.State                  # the policy's full params (LoRA: merged)
  steps: int
  history: list[dict]
  adapters: nnx.State | None = None  # with config.lora: what was trained


def trainable(cfg, params: nnx.State, ref_params: nnx.State, adapters=None, seed: int = 0):
  """(what the optimizer trains, trained -> policy params, lora_scale or None).

  Full fine-tuning trains `params`. With config.lora.rank > 0 it trains adapters
  (`adapters`, else fresh ones) on the frozen base `ref_params`, which `params`
  must be: the policy is lora.merge(base, adapters), the reference the base.
  """
  lcfg = config_lib.lora_config(cfg)
  if not lcfg.enabled:
    return params, lambda p: p, None
  if params is not ref_params:
    raise ValueError('config.lora: training starts from the base (params is ref_params); '
                     'continue from earlier adapters with adapters=')
  if adapters is None:
    adapters = lora.init(ref_params, lcfg, jax.random.key(seed + 2))
  merge = jax.jit(functools.partial(lora.merge, scale=lcfg.scale))
  return adapters, lambda ad: merge(ref_params, ad), lcfg.scale


def _with_base_y1(exp: Experiment, ref_params, batch, examples, key, k: int,
                  fraction: float, temperature: float, policy_params):
  """The paper's Stage II data trick: extra rows whose y1 was sampled by the base model
  (ref_params and policy_params: the sampler's copies, Experiment.for_sampling)."""
  n = int(round(fraction * len(batch['index'])))
  if n == 0:
    return None
  sub = {name: np.asarray(v)[:n] for name, v in batch.items()}
  ids = np.repeat(sub['prompt_ids'], k, axis=0)
  mask = np.repeat(sub['prompt_mask'], k, axis=0)
  gen = exp.sampler(temperature).generate(ref_params, ids, mask,
                                          exp.process_key(jax.random.fold_in(key, 7)))
  y1 = np.asarray(gen.tokens_BM)
  y1_mask = np.arange(y1.shape[1])[None, :] < np.asarray(gen.len_B)[:, None]
  return exp.rollout(policy_params, sub, examples, jax.random.fold_in(key, 8),
                     temperature=temperature, repeat=k, y1_ids=y1, y1_mask=y1_mask)


@dataclasses.dataclass
class _Plan:
  """What train_score and check_resume both derive from the config and arguments."""
  schedule: list[tuple[str, int]]
  total: int
  seed: int
  workdir: pathlib.Path
  tx: optax.GradientTransformation
  fingerprint: dict


def _plan(exp: Experiment, schedule, seed, workdir, phase: str) -> _Plan:
  cfg = exp.cfg
  seed = cfg.seed if seed is None else seed
  schedule = list(schedule if schedule is not None else config_lib.schedule(cfg))
  total = sum(n for _, n in schedule)
  optim_cfg = dataclasses.replace(config_lib.optim_config(cfg), total_steps=total)
  return _Plan(schedule, total, seed,
               pathlib.Path(exp.workdir / phase if workdir is None else workdir),
               state_lib.make_optimizer(optim_cfg), resume_lib.fingerprint(cfg, schedule, seed))


def _checkpointer(exp: Experiment, plan: _Plan) -> Checkpointer:
  c = exp.cfg.checkpoint
  return Checkpointer(CheckpointConfig(
      directory=str(plan.workdir / 'checkpoints'), every=c.every, keep=c.keep,
      keep_best=c.keep_best, async_save=c.async_save))


def _abstract_params(exp: Experiment) -> nnx.State:
  # Shapes and logical axes of the run's params, whatever builds them; no compute.
  return nnx.eval_shape(lambda: exp.init_params(0))


def _resume(exp: Experiment, plan: _Plan, ckpt: Checkpointer, state, restore: bool = True,
            abstract: nnx.State | None = None):
  """(start step, state, data state or None, forced config changes so far).

  abstract: the run's abstract params if the caller has them; else they are
  built only to name the config field of a mismatched array.
  """
  cfg = exp.cfg
  if not cfg.checkpoint.resume:
    return 0, state, None, []
  forced: list[dict] = []

  def check(step: int, meta: dict) -> None:
    changes = resume_lib.check_config(str(ckpt.root / 'latest'), step, meta, plan.fingerprint,
                                      bool(cfg.checkpoint.get('force_resume', False)))
    forced[:] = list(meta.get('forced', [])) + ([{'step': step, 'changes': changes}]
                                                if changes else [])

  def describe(key: str, axis: int | None) -> str | None:
    return resume_lib.axis_fields(abstract or _abstract_params(exp))(key, axis)

  found = ckpt.resume(state, check, describe=describe, restore=restore)
  if found is None:
    return 0, state, None, []
  _, restored, data_state, meta = found
  return int(meta['step']), (restored if restore else state), data_state, forced


def check_resume(exp: Experiment, *, phase: str = 'score', schedule=None, seed=None,
                 workdir=None) -> int | None:
  """train_score's resume checks, before any work: they read checkpoint metadata only.

  Raises checkpoint.ResumeRefused (a UserError, one line) when the workdir's
  checkpoint is of another model or config; sets damaged steps aside. Returns the
  step train_score would resume from (None: a fresh start). Launchers call it
  before building the base model, so a doomed resume costs no warm-up.
  """
  plan = _plan(exp, schedule, seed, workdir, phase)
  abstract = _abstract_params(exp)
  shardings = state_lib.state_shardings(abstract, plan.tx, exp.mesh, exp.strategy.rules)
  state = jax.eval_shape(lambda p: state_lib.init_train_state(
      p, plan.tx, jax.random.key(plan.seed), shardings), abstract)
  ckpt = _checkpointer(exp, plan)
  try:
    start = _resume(exp, plan, ckpt, state, restore=False, abstract=abstract)[0]
  finally:
    ckpt.close()
  return start or None


def _init_policy(exp: Experiment, plan: _Plan, params, ref_params, adapters):
  """(state, trained -> policy params, lora_scale, state shardings, ref_params placed)."""
  ref_is_params, ref_params = params is ref_params, jax.device_put(
      ref_params, exp.param_shardings(ref_params))
  train_init, policy, lora_scale = trainable(
      exp.cfg, ref_params if ref_is_params else params, ref_params, adapters, plan.seed)
  shardings = state_lib.state_shardings(train_init, plan.tx, exp.mesh, exp.strategy.rules)
  state = state_lib.init_train_state(train_init, plan.tx, jax.random.key(plan.seed), shardings)
  return state, policy, lora_scale, shardings, ref_params


def _sample_rows(exp: Experiment, stage: str, sample_params, ref_sample, batch, examples,
                 step_key, pairs):
  """(rollout, the step's training rows, pair stats): two attempts from the policy,
  plus Stage II's base-y1 rows, or a dpo stage's best-vs-worst pairs."""
  cfg = exp.cfg
  k, temperature = cfg.train.samples_per_prompt, float(cfg.sampling.temperature)
  ro = exp.rollout(sample_params, batch, examples, step_key, temperature=temperature, repeat=k)
  train_batch = ro.train_batch()
  if stage == 'stage2' and cfg.train.base_y1_fraction > 0:
    extra = _with_base_y1(exp, ref_sample(), batch, examples, step_key, k,
                          cfg.train.base_y1_fraction, temperature, sample_params)
    if extra is not None:
      extra = extra.train_batch()
      train_batch = {k: np.concatenate([v, extra[k]]) for k, v in train_batch.items()}
  if stage == 'dpo':
    return (ro, *pairs.batch(ro, batch, examples, k))
  return ro, train_batch, {}


def _compile(exp: Experiment, stage: str, plan: _Plan, loss_cfg, shardings, ref_params,
             global_batch, lora_scale):
  """The jitted step of `stage` for this batch shape (sharded, state donated)."""
  b, t = global_batch['tokens'].shape
  act = (sh.activation_sharding(exp.mesh, exp.strategy.rules, (b, t, exp.model_cfg.embed_dim))
         if exp.cfg.mesh.constrain_activations else None)
  return step_lib.compile_step(
      exp.graphdef, plan.tx, loss_cfg, stage, exp.mesh, exp.strategy.rules, shardings,
      exp.param_shardings(ref_params), global_batch, activation_sharding=act,
      lora_scale=lora_scale,
      # A trace holds at most this many y1 + y2 tokens: score only those.
      response_len=exp.cfg.sampling.max_y1_tokens + exp.cfg.sampling.max_y2_tokens)


def _open_data(exp: Experiment, plan: _Plan, ckpt: Checkpointer, state, phase: str):
  """(examples, batch iterator, start step, state, forced changes), resumed if found."""
  examples = exp.task.load_examples('train')
  data_it = iter(exp.pipeline(examples, exp.cfg.data.batch_size, seed=plan.seed, train=True))
  start, state, data_state, forced = _resume(exp, plan, ckpt, state)
  if data_state is not None:
    data_it.set_state(data_state)
    logging.info('%s: resumed at step %d', phase, start)
    if start >= plan.total:
      logging.warning('%s: the checkpoint at step %d already completes this schedule (%d '
                      'steps) under this config; nothing to train. A new --config.workdir '
                      'trains afresh.', phase, start, plan.total)
  return examples, data_it, start, state, forced


def _metrics(host: dict, stage: str, ro, rows: int, pair_stats: dict, update_s: float):
  """The step's logged row. Rewards are per process; every process logs and ranks
  checkpoints by the mean over all of them (one small all-gather)."""
  acc_t1, acc_t2 = sh.global_mean(ro.r1), sh.global_mean(ro.r2)
  return dict(host, **pair_stats, stage=stage, acc_t1=acc_t1, acc_t2=acc_t2, rows=float(rows),
              time_sampling_s=ro.sample_s, time_rewards_s=ro.reward_s, time_update_s=update_s)


def train_score(exp: Experiment, params: nnx.State, ref_params: nnx.State, *,
                schedule: Sequence[tuple[str, int]] | None = None,
                workdir=None, phase: str = 'score', seed: int | None = None,
                on_log: Callable[[int, dict], None] | None = None,
                stop_after: int | None = None, adapters=None) -> ScoreResult:
  """Runs the stage schedule from `params` against the frozen `ref_params`.

  Resumes from the newest intact checkpoint under `workdir` when
  config.checkpoint.resume, after check_resume's checks; metrics logged after
  that step are dropped, as the run writes them again. SIGTERM / SIGINT: save
  this step, then raise preemption.Preempted (exit code 0).

  With config.lora: trains adapters on the base `ref_params` (see `trainable`).
  `stop_after`: end (with a checkpoint) after this many steps of this call, as if
  killed; used to test exact resumption.
  """
  cfg = exp.cfg
  plan = _plan(exp, schedule, seed, workdir, phase)
  state, policy, lora_scale, shardings, ref_params = _init_policy(
      exp, plan, params, ref_params, adapters)
  pairs = online_lib.OnlinePairs(exp, ref_params) if any(
      s == 'dpo' for s, _ in plan.schedule) else None
  loss_cfg = pairs.loss_cfg if pairs else None   # dpo's; SCoRe stages read config.loss
  ckpt = _checkpointer(exp, plan)
  examples, data_it, start, state, forced = _open_data(exp, plan, ckpt, state, phase)
  writer = MetricsWriter(plan.workdir)
  writer.rewind(phase, start)
  ref_sample = functools.cache(lambda: exp.for_sampling(ref_params))  # made once if needed
  total, steps_fns, history, window, step = plan.total, {}, [], [], start
  end = total if stop_after is None else min(total, start + stop_after)
  bar, key = progress(total, f'{phase}', initial=start), jax.random.key(plan.seed + 1)
  with StopOnSignal() as stop:
    try:
      while step < end:
        # 1. sample two attempts and score them; 2. one jitted update.
        stage, batch = stage_at(plan.schedule, step), next(data_it)
        ro, train_batch, pair_stats = _sample_rows(
            exp, stage, exp.for_sampling(policy(state.params)), ref_sample, batch, examples,
            jax.random.fold_in(key, step), pairs)
        t0 = time.perf_counter()
        global_batch = to_global(train_batch, exp)
        if stage not in steps_fns:
          steps_fns[stage] = _compile(
              exp, stage, plan, loss_cfg if stage == 'dpo' else config_lib.loss_config(cfg),
              shardings, ref_params, global_batch, lora_scale)
        state, metrics = steps_fns[stage](state, ref_params, global_batch)
        host = finite_or_raise(metrics, f'{phase}/{stage}', step)
        step += 1
        # 3. log; 4. checkpoint on schedule, or on a signal, then stop.
        host = _metrics(host, stage, ro, len(train_batch['tokens']), pair_stats,
                        time.perf_counter() - t0)
        window = (window + [(host['acc_t1'] + host['acc_t2']) / 2])[-max(cfg.train.log_every, 1):]
        history.append(dict(host, step=step, prompts=np.asarray(batch['index']).tolist()))
        if step % max(cfg.train.log_every, 1) == 0 or step == total:
          writer.write(phase, step, host)
          if on_log is not None:
            on_log(step, host)
        bar.set_postfix(stage=stage, t1=f'{host["acc_t1"]:.2f}', t2=f'{host["acc_t2"]:.2f}')
        bar.update(1)
        signalled = stop.requested()   # collective: every process stops at this step
        if ckpt.should_save(step, step == end) or signalled:
          ckpt.save(step, state, data_it.get_state(),
                    {'step': step, 'stage': stage, 'config': plan.fingerprint, 'forced': forced},
                    train_reward=float(np.mean(window)))
        if signalled and step != end:
          message = (f'{phase}: {stop.received or "another process was signalled"}; saved '
                     f'step {step} of {total}; rerun the same command to resume')
          logging.warning('%s', message)
          raise Preempted(message)
    finally:
      bar.close()
      ckpt.wait()
      ckpt.close()
      writer.close()
  return ScoreResult(params=policy(state.params), steps=step, history=history,
                     adapters=state.params if lora_scale is not None else None)


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
      yield {'tokens': tokens[idx], 'valid': valid[idx], 'target_mask': target_mask[idx]}


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
  train_init, policy, lora_scale = trainable(exp.cfg, params, params, seed=seed)
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
