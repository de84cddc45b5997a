"""The experiment config: one ml_collections ConfigDict, defaults here, overrides in configs/.

Sections: model, tokenizer, task, data, sampling, loss, dpo, optim, train,
checkpoint, mesh, eval. Every field can be overridden from the command line
(--config=configs/tiny.py --config.train.stage2_steps=50). Builders turn sections
into the typed objects the library uses and fail with a message naming the field.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections

from score_jax.losses import DPOConfig, LossConfig
from score_jax.training.state import OptimConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'
STAGES = ('stage1', 'stage2', 'dpo')   # what config.train.schedule may name


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = 'runs/default'

  c.model = ml_collections.ConfigDict()
  c.model.preset = 'gemma3_tiny'
  c.model.overrides = ml_collections.ConfigDict()   # any ModelConfig field
  c.model.checkpoint = ''          # '' = random init; else a path (see models.checkpoints)
  c.model.checkpoint_format = 'auto'

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.path = ''            # a sentencepiece .model; '' = train one on the task
  c.tokenizer.vocab_size = 64      # when trained here

  c.task = ml_collections.ConfigDict()
  c.task.name = 'synthetic_arithmetic'
  c.task.fields = ml_collections.ConfigDict()       # constructor fields of the task

  c.data = ml_collections.ConfigDict()
  c.data.batch_size = 16           # prompts per step (per process)
  c.data.buckets = (32,)
  c.data.overlong = 'drop'

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 1.0     # paper: 1.0 for training
  c.sampling.top_k = 0             # 0 = off
  c.sampling.top_p = 1.0           # 1 = off
  c.sampling.max_y1_tokens = 8
  c.sampling.max_y2_tokens = 8

  c.loss = ml_collections.ConfigDict(dataclasses.asdict(LossConfig()))
  del c.loss['samples_per_prompt']  # one place for it: train.samples_per_prompt
  c.loss.beta2 = 0.1               # explicit 10 * beta1 (paper, MATH)
  c.loss.baseline = 'loo'
  # The `dpo` stage: loss (DPOConfig), how pairs are scored (preference.scorers),
  # and the judge's rubric (preference.judge.JudgeConfig).
  c.dpo = ml_collections.ConfigDict(dataclasses.asdict(DPOConfig()))
  c.dpo.scorer = 'oracle'
  c.dpo.judge = _judge_defaults()
  c.optim = ml_collections.ConfigDict(dataclasses.asdict(OptimConfig()))
  c.optim.grad_clip_norm = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.samples_per_prompt = 4   # k rollouts per prompt (LOO baseline)
  # The stage schedule: (stage, steps) pairs run in order; repeat to interleave.
  c.train.schedule = (('stage1', 100), ('stage2', 100))
  c.train.base_y1_fraction = 0.0   # Stage II: extra rows whose y1 comes from the base model
  c.train.log_every = 10
  c.train.eval_every = 0           # 0 = only at the end

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 100
  c.checkpoint.keep = 2
  c.checkpoint.keep_best = True
  c.checkpoint.async_save = True
  c.checkpoint.resume = True       # continue from the latest checkpoint in workdir

  c.mesh = ml_collections.ConfigDict()
  c.mesh.strategy = 'dp'
  c.mesh.shape = ()                # () = the strategy's default, -1 fills
  c.mesh.distributed = False       # jax.distributed.initialize() (multi-host)
  c.mesh.constrain_activations = True  # pin x_BTD's sharding at every layer boundary

  c.eval = ml_collections.ConfigDict()
  c.eval.num_problems = 500
  c.eval.batch_size = 64
  c.eval.temperatures = (0.0,)     # 0 = greedy (paper)
  c.eval.split = 'test'
  c.eval.bootstrap_resamples = 10_000
  return c


def _judge_defaults() -> ml_collections.ConfigDict:
  from score_jax.preference.judge import JudgeConfig  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dataclasses.asdict(JudgeConfig()))


def _dataclass_from(section, cls, name: str):
  fields = {f.name for f in dataclasses.fields(cls)}
  values = dict(section.items()) if hasattr(section, 'items') else dict(section)
  unknown = set(values) - fields
  if unknown:
    raise ValueError(f'config.{name}: unknown field(s) {sorted(unknown)}; '
                     f'expected some of {sorted(fields)}')
  try:
    return cls(**values)
  except (TypeError, ValueError) as e:
    raise ValueError(f'config.{name}: {e}') from e


def loss_config(c: ml_collections.ConfigDict) -> LossConfig:
  values = dict(c.loss.items())
  values['samples_per_prompt'] = int(c.train.samples_per_prompt)
  return _dataclass_from(values, LossConfig, 'loss')


def dpo_config(c: ml_collections.ConfigDict) -> DPOConfig:
  values = {k: v for k, v in c.dpo.items() if k not in ('scorer', 'judge')}
  return _dataclass_from(values, DPOConfig, 'dpo')


def judge_config(c: ml_collections.ConfigDict):
  from score_jax.preference.judge import JudgeConfig  # pylint: disable=g-import-not-at-top
  return _dataclass_from(c.dpo.judge, JudgeConfig, 'dpo.judge')


def optim_config(c: ml_collections.ConfigDict) -> OptimConfig:
  values = dict(c.optim.items())
  values['total_steps'] = sum(int(n) for s, n in c.train.schedule if s != 'sft')
  return _dataclass_from(values, OptimConfig, 'optim')


def schedule(c: ml_collections.ConfigDict) -> list[tuple[str, int]]:
  out = []
  for i, item in enumerate(c.train.schedule):
    if len(item) != 2 or item[0] not in STAGES or int(item[1]) < 0:
      raise ValueError(f'config.train.schedule[{i}] = {item!r}; expected '
                       "('stage1' | 'stage2' | 'dpo', steps >= 0)")
    out.append((str(item[0]), int(item[1])))
  return out


def resolve_path(path: str) -> pathlib.Path:
  """Paths in configs are relative to the repo root unless absolute or ~."""
  p = pathlib.Path(path).expanduser()
  return p if p.is_absolute() else REPO_ROOT / p


def as_dict(c: Any) -> dict:
  return c.to_dict() if hasattr(c, 'to_dict') else dict(c)
