"""The experiment config: one ml_collections ConfigDict, defaults here, overrides in configs/.

Sections: model, lora, tokenizer, task, data, sampling, loss, dpo, optim, train,
checkpoint, mesh, eval (and base_sft, in configs that train their own base model).
Every field can be overridden from the command line (--config=configs/tiny.py
--config.loss.alpha=5). `validate` checks the whole config before any work starts;
builders turn sections into the typed objects the library uses. Both fail with a
one-line ConfigError naming the field and what it expects.
"""
from __future__ import annotations

import dataclasses
import numbers
import pathlib
from typing import Any, Callable

import ml_collections

from score_jax.errors import UserError
from score_jax.losses import DPOConfig, LossConfig
from score_jax.models.lora import LoraConfig
from score_jax.training.state import OptimConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'
STAGES = ('stage1', 'stage2', 'dpo')   # what config.train.schedule may name


def base_config() -> ml_collections.ConfigDict:
  """The defaults of every section, in the order a run reads them."""
  c = ml_collections.ConfigDict()
  _add_model_and_data(c)
  _add_objective(c)
  _add_run(c)
  return c


def _add_model_and_data(c: ml_collections.ConfigDict) -> None:
  """seed, workdir, model, lora, tokenizer, task, data, sampling."""
  c.seed = 0
  c.workdir = 'runs/default'

  c.model = ml_collections.ConfigDict()
  c.model.preset = 'gemma3_tiny'
  c.model.overrides = ml_collections.ConfigDict()   # any ModelConfig field
  c.model.checkpoint = ''          # '' = random init; else a path (see models.checkpoints)
  c.model.checkpoint_format = 'auto'

  # LoRA (models.lora): rank 0 trains every weight; rank r > 0 trains only
  # low-rank adapters on the base (which stays frozen and is the KL reference).
  c.lora = ml_collections.ConfigDict(dataclasses.asdict(LoraConfig()))

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


def _add_objective(c: ml_collections.ConfigDict) -> None:
  """loss, dpo, optim, train: what the steps optimise, and their schedule."""
  c.loss = ml_collections.ConfigDict(dataclasses.asdict(LossConfig()))
  # One place for k in a run: train.samples_per_prompt (its default is LossConfig's).
  samples_per_prompt = c.loss.samples_per_prompt
  del c.loss['samples_per_prompt']
  c.loss.beta2 = 0.1               # explicit 10 * beta1 (paper, MATH)
  # The `dpo` stage: loss (DPOConfig), how pairs are scored (preference.scorers),
  # and the judge's rubric (preference.judge.JudgeConfig).
  c.dpo = ml_collections.ConfigDict(dataclasses.asdict(DPOConfig()))
  c.dpo.scorer = 'oracle'
  c.dpo.judge = _judge_defaults()
  c.optim = ml_collections.ConfigDict(dataclasses.asdict(OptimConfig()))
  c.optim.grad_clip_norm = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.samples_per_prompt = samples_per_prompt  # k rollouts per prompt (LOO baseline)
  # The stage schedule: (stage, steps) pairs run in order; repeat to interleave.
  c.train.schedule = (('stage1', 100), ('stage2', 100))
  c.train.base_y1_fraction = 0.0   # Stage II: extra rows whose y1 comes from the base model
  c.train.log_every = 10
  c.train.eval_every = 0           # 0 = only at the end


def _add_run(c: ml_collections.ConfigDict) -> None:
  """checkpoint, mesh, eval: where a run saves, runs and is measured."""
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 100
  c.checkpoint.keep = 2
  c.checkpoint.keep_best = True
  c.checkpoint.async_save = True
  c.checkpoint.resume = True       # continue from the latest checkpoint in workdir
  c.checkpoint.force_resume = False  # resume even if the config's fingerprint changed

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


def _judge_defaults() -> ml_collections.ConfigDict:
  from score_jax.preference.judge import JudgeConfig  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dataclasses.asdict(JudgeConfig()))


class ConfigError(UserError):
  """A config field that cannot work; the message is one line naming the field."""


def _dataclass_from(section, cls, name: str):
  fields = {f.name for f in dataclasses.fields(cls)}
  values = dict(section.items()) if hasattr(section, 'items') else dict(section)
  unknown = set(values) - fields
  if unknown:
    raise ConfigError(f'config.{name}: unknown field(s) {sorted(unknown)}; '
                      f'expected some of {sorted(fields)}')
  try:
    return cls(**values)
  except (TypeError, ValueError) as e:
    # 'LossConfig.alpha=-1; ...' -> 'config.loss.alpha=-1; ...'
    text = str(e)
    prefix = f'{cls.__name__}.'
    raise ConfigError(f'config.{name}.{text[len(prefix):]}' if text.startswith(prefix)
                      else f'config.{name}: {text}') from e


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


def lora_config(c: ml_collections.ConfigDict) -> LoraConfig:
  return _dataclass_from(c.get('lora', {}), LoraConfig, 'lora')


def optim_config(c: ml_collections.ConfigDict) -> OptimConfig:
  values = dict(c.optim.items())
  values['total_steps'] = sum(n for _, n in schedule(c))
  return _dataclass_from(values, OptimConfig, 'optim')


def schedule(c: ml_collections.ConfigDict) -> list[tuple[str, int]]:
  """config.train.schedule as checked (stage, steps) pairs."""
  sched = c.train.schedule
  example = "e.g. (('stage1', 400), ('stage2', 300))"
  if isinstance(sched, (str, bytes)) or not isinstance(sched, (tuple, list)):
    raise ConfigError(f'config.train.schedule={sched!r}; expected a sequence of '
                      f'(stage, steps) pairs, {example}')
  out = []
  for i, item in enumerate(sched):
    ok = (isinstance(item, (tuple, list)) and len(item) == 2
          and item[0] in STAGES and _is_int(item[1]) and item[1] >= 0)
    if not ok:
      raise ConfigError(f'config.train.schedule[{i}]={item!r}; expected a pair '
                        f"({' | '.join(map(repr, STAGES))}, steps >= 0), {example}")
    out.append((str(item[0]), int(item[1])))
  return out


def resolve_path(path: str) -> pathlib.Path:
  """Paths in configs are relative to the repo root unless absolute or ~."""
  p = pathlib.Path(path).expanduser()
  return p if p.is_absolute() else REPO_ROOT / p


def as_dict(c: Any) -> dict:
  return c.to_dict() if hasattr(c, 'to_dict') else dict(c)


# ----------------------------------------------------------------------------- validation


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int_at_least(lo: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: _is_int(v) and v >= lo), f'an integer >= {lo}'


def _num_in(lo: float, hi: float, lo_open: bool = False) -> tuple[Callable, str]:
  left = '<' if lo_open else '<='
  return ((lambda v: _is_num(v) and (v > lo if lo_open else v >= lo) and v <= hi),
          f'a number with {lo:g} {left} x <= {hi:g}')


def _positive_ints(v) -> bool:
  return isinstance(v, (tuple, list)) and len(v) > 0 and all(
      _is_int(x) and x > 0 for x in v)


def _temperatures(v) -> bool:
  return isinstance(v, (tuple, list)) and len(v) > 0 and all(
      _is_num(x) and x >= 0 for x in v)


# Fields of the sections that have no dataclass of their own (loss and optim are
# checked by LossConfig / OptimConfig). Each: dotted path, test, expectation.
_FIELD_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ('seed', *_int_at_least(0)),
    ('workdir', lambda v: isinstance(v, str) and bool(v.strip()), 'a non-empty path'),
    ('data.batch_size', *_int_at_least(1)),
    ('data.buckets', _positive_ints, 'a non-empty tuple of prompt lengths > 0'),
    ('data.overlong', lambda v: v in ('drop', 'truncate'), "'drop' or 'truncate'"),
    ('sampling.temperature', *_num_in(0, float('inf'))),
    ('sampling.top_k', *_int_at_least(0)),
    ('sampling.top_p', *_num_in(0, 1, lo_open=True)),
    ('sampling.max_y1_tokens', *_int_at_least(1)),
    ('sampling.max_y2_tokens', *_int_at_least(1)),
    ('train.samples_per_prompt', *_int_at_least(1)),
    ('train.base_y1_fraction', *_num_in(0, 1)),
    ('train.log_every', *_int_at_least(1)),
    ('train.eval_every', *_int_at_least(0)),
    ('checkpoint.every', *_int_at_least(0)),
    ('checkpoint.keep', *_int_at_least(1)),
    ('eval.num_problems', *_int_at_least(1)),
    ('eval.batch_size', *_int_at_least(1)),
    ('eval.temperatures', _temperatures, 'a non-empty tuple of temperatures >= 0'),
    ('eval.bootstrap_resamples', *_int_at_least(1)),
    ('base_sft.batch_size', *_int_at_least(1)),
    ('base_sft.steps', *_int_at_least(0)),
    ('base_sft.learning_rate', *_num_in(0, float('inf'), lo_open=True)),
    ('base_sft.holdout', *_int_at_least(0)),
    ('base_sft.corrupt_fraction', *_num_in(0, 1)),
)
# Sections whose keys are free: they are checked by what they configure.
_FREE_SECTIONS = ('model.overrides', 'task.fields', 'base_sft')
# Old section name -> new one: a config or flag with the old name gets a line
# saying so (issue 15: 'warmup' also named the learning-rate warm-up).
RENAMED_SECTIONS = {'warmup': 'base_sft'}


def renamed_section_error(path: str) -> str | None:
  """The one-line error for a dotted config path under a renamed section, else None."""
  old, _, rest = path.partition('.')
  if old not in RENAMED_SECTIONS:
    return None
  where = f'config.{path}: ' if rest else ''
  return (f'{where}the section config.{old} is now config.{RENAMED_SECTIONS[old]} '
          f"(same fields); write config.{RENAMED_SECTIONS[old]}{'.' + rest if rest else ''}")


def _unknown_fields(c, schema, prefix: str = '') -> list[str]:
  out = []
  for key, value in c.items():
    path = f'{prefix}{key}'
    if path in _FREE_SECTIONS:
      continue
    if key not in schema:
      out.append(path)
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        schema[key], ml_collections.ConfigDict):
      out += _unknown_fields(value, schema[key], f'{path}.')
  return out


_MISSING = object()


def _lookup(c, path: str):
  for part in path.split('.'):
    if part not in c:
      return _MISSING
    c = c[part]
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Checks every field a run reads, before any model, data or file is touched.

  Raises:
    ConfigError: one line naming the first bad field and what it expects.
  """
  unknown = _unknown_fields(c, base_config())
  if unknown and renamed_section_error(unknown[0]):
    raise ConfigError(renamed_section_error(unknown[0]))
  if unknown:
    raise ConfigError(f'config.{unknown[0]}: unknown field (not in score_jax/config.py '
                      'base_config); check the spelling')
  for path, ok, expect in _FIELD_RULES:
    value = _lookup(c, path)
    if value is _MISSING:
      if not path.startswith('base_sft.'):
        raise ConfigError(f'config.{path}: missing; expected {expect}')
    elif not ok(value):
      raise ConfigError(f'config.{path}={value!r}; expected {expect}')
  schedule(c)
  loss_config(c)
  dpo_config(c)
  judge_config(c)
  lora_config(c)
  optim_config(c)
  if not c.model.checkpoint:
    from score_jax.models.config import get_preset  # pylint: disable=g-import-not-at-top
    try:
      get_preset(c.model.preset, **c.model.overrides.to_dict())
    except (TypeError, ValueError) as e:
      raise ConfigError(f'config.model: {e}') from e
  from score_jax.data.tasks import task_names  # pylint: disable=g-import-not-at-top
  if c.task.name not in task_names():
    raise ConfigError(f'config.task.name={c.task.name!r}; expected one of '
                      f'{", ".join(task_names())}')
  from score_jax.training.sharding import get_strategy  # pylint: disable=g-import-not-at-top
  try:
    get_strategy(c.mesh.strategy)
  except ValueError as e:
    raise ConfigError(str(e)) from e
