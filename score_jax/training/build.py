"""Builds the SCoRe loop's parts (loop.ScoreParts) from a run's config.

From an Experiment (task, tokenizer, model, mesh) and the config: the stage
schedule and optimizer (`Plan`), the train state (full fine-tuning or LoRA
adapters), the checkpointer and the resume checks (resume.py), the data
iterator positioned where a resumed run stopped, and the jitted update of each
stage. Nothing here runs a training step.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import optax
from absl import logging
from flax import nnx

from score_jax import config as config_lib
from score_jax.models import lora
from score_jax.preference import online as online_lib
from score_jax.training import loop as loop_lib
from score_jax.training import resume as resume_lib
from score_jax.training import sharding as sh
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from score_jax.training.checkpoint import Checkpointer, CheckpointConfig
from score_jax.training.experiment import Experiment
from score_jax.training.metric_log import MetricsWriter


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


@dataclasses.dataclass
class Plan:
  """What a SCoRe run and its resume checks both derive from the config and arguments."""
  schedule: list[tuple[str, int]]
  total: int
  seed: int
  workdir: pathlib.Path
  tx: optax.GradientTransformation
  fingerprint: dict


def plan(exp: Experiment, schedule, seed, workdir, phase: str) -> Plan:
  cfg = exp.cfg
  seed = cfg.seed if seed is None else seed
  schedule = list(schedule if schedule is not None else config_lib.schedule(cfg))
  total = sum(n for _, n in schedule)
  optim_cfg = dataclasses.replace(config_lib.optim_config(cfg), total_steps=total)
  return Plan(schedule, total, seed,
              pathlib.Path(exp.workdir / phase if workdir is None else workdir),
              state_lib.make_optimizer(optim_cfg), resume_lib.fingerprint(cfg, schedule, seed))


def checkpointer(exp: Experiment, p: Plan) -> Checkpointer:
  c = exp.cfg.checkpoint
  return Checkpointer(CheckpointConfig(
      directory=str(p.workdir / 'checkpoints'), every=c.every, keep=c.keep,
      keep_best=c.keep_best, async_save=c.async_save))


def abstract_params(exp: Experiment) -> nnx.State:
  # Shapes and logical axes of the run's params, whatever builds them; no compute.
  return nnx.eval_shape(lambda: exp.init_params(0))


def resume(exp: Experiment, p: Plan, ckpt: Checkpointer, state, restore: bool = True,
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
    changes = resume_lib.check_config(str(ckpt.root / 'latest'), step, meta, p.fingerprint,
                                      bool(cfg.checkpoint.get('force_resume', False)))
    forced[:] = list(meta.get('forced', [])) + ([{'step': step, 'changes': changes}]
                                                if changes else [])

  def describe(key: str, axis: int | None) -> str | None:
    return resume_lib.axis_fields(abstract or abstract_params(exp))(key, axis)

  found = ckpt.resume(state, check, describe=describe, restore=restore)
  if found is None:
    return 0, state, None, []
  _, restored, data_state, meta = found
  return int(meta['step']), (restored if restore else state), data_state, forced


def init_state(exp: Experiment, p: Plan, params, ref_params, adapters):
  """(state, trained -> policy params, lora_scale, state shardings, ref_params placed)."""
  ref_is_params, ref_params = params is ref_params, jax.device_put(
      ref_params, exp.param_shardings(ref_params))
  train_init, policy, lora_scale = trainable(
      exp.cfg, ref_params if ref_is_params else params, ref_params, adapters, p.seed)
  shardings = state_lib.state_shardings(train_init, p.tx, exp.mesh, exp.strategy.rules)
  state = state_lib.init_train_state(train_init, p.tx, jax.random.key(p.seed), shardings)
  return state, policy, lora_scale, shardings, ref_params


def update_fn(exp: Experiment, p: Plan, shardings, ref_params, lora_scale,
              dpo_loss_cfg) -> loop_lib.UpdateFn:
  """stage -> its jitted step (sharded, state donated), compiled for the first batch."""
  cfg, compiled = exp.cfg, {}

  def update(stage, state, ref, batch):
    if stage not in compiled:
      b, t = batch.tokens_BT.shape
      act = (sh.activation_sharding(exp.mesh, exp.strategy.rules,
                                    (b, t, exp.model_cfg.embed_dim))
             if cfg.mesh.constrain_activations else None)
      compiled[stage] = step_lib.compile_step(
          exp.graphdef, p.tx, dpo_loss_cfg if stage == 'dpo' else config_lib.loss_config(cfg),
          stage, exp.mesh, exp.strategy.rules, shardings, exp.param_shardings(ref_params),
          batch, activation_sharding=act, lora_scale=lora_scale,
          # A trace holds at most this many y1 + y2 tokens: score only those.
          response_len=cfg.sampling.max_y1_tokens + cfg.sampling.max_y2_tokens)
    return compiled[stage](state, ref, batch)
  return update


def open_data(exp: Experiment, p: Plan, ckpt: Checkpointer, state, phase: str):
  """(examples, batch iterator, start step, state, forced changes), resumed if found."""
  examples = exp.task.load_examples('train')
  data_it = iter(exp.pipeline(examples, exp.cfg.data.batch_size, seed=p.seed, train=True))
  start, state, data_state, forced = resume(exp, p, ckpt, state)
  if data_state is not None:
    data_it.set_state(data_state)
    logging.info('%s: resumed at step %d', phase, start)
    if start >= p.total:
      logging.warning('%s: the checkpoint at step %d already completes this schedule (%d '
                      'steps) under this config; nothing to train. A new --config.workdir '
                      'trains afresh.', phase, start, p.total)
  return examples, data_it, start, state, forced


def score_parts(exp: Experiment, p: Plan, params, ref_params, adapters, phase: str):
  """(parts, loop config, state, ref_params placed, start step, lora_scale)."""
  cfg = exp.cfg
  state, policy, lora_scale, shardings, ref_params = init_state(
      exp, p, params, ref_params, adapters)
  pairs = (online_lib.OnlinePairs(exp, ref_params)
           if any(s == 'dpo' for s, _ in p.schedule) else None)
  ckpt = checkpointer(exp, p)
  examples, data_it, start, state, forced = open_data(exp, p, ckpt, state, phase)
  writer = MetricsWriter(p.workdir)
  writer.rewind(phase, start)   # a resumed run writes the steps after `start` again
  parts = loop_lib.ScoreParts(
      attempts=exp.two_attempts(float(cfg.sampling.temperature)), examples=examples,
      data=data_it, update=update_fn(exp, p, shardings, ref_params, lora_scale,
                                     pairs.loss_cfg if pairs else None),
      to_global=functools.partial(sh.host_local_batch_to_global, mesh=exp.mesh,
                                  rules=exp.strategy.rules),
      for_sampling=functools.partial(sh.for_sampling, mesh=exp.mesh, strategy=exp.strategy),
      policy=policy, checkpointer=ckpt, writer=writer, pairs=pairs)
  loop_cfg = loop_lib.LoopConfig(
      schedule=p.schedule, samples_per_prompt=cfg.train.samples_per_prompt,
      sample_seed=p.seed + 1, base_y1_fraction=cfg.train.base_y1_fraction,
      log_every=cfg.train.log_every, phase=phase,
      checkpoint_meta={'config': p.fingerprint, 'forced': forced})
  return parts, loop_cfg, state, ref_params, start, lora_scale
