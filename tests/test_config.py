"""Tests of score_jax.config.validate: every bad field is refused in one line naming it.

launch/common.py runs the same check before any launcher loads a model; the
subprocess cases are in tests/launch/test_common.py, these run in-process.
"""
import importlib.util

import pytest

from score_jax import config as config_lib
from tests.training.tiny_config import tiny_config

REPO = config_lib.REPO_ROOT


def _load(path):
  spec = importlib.util.spec_from_file_location('cfg', REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').glob('*.py'))


@pytest.mark.parametrize('path', SHIPPED)
def test_shipped_configs_are_valid(path):
  config_lib.validate(_load(path))


def _set(c, dotted, value):
  *parents, leaf = dotted.split('.')
  for p in parents:
    c = c[p]
  with c.ignore_type():   # as a config file or a flag may: a float where an int was
    setattr(c, leaf, value)


# (dotted field, bad value, text the message must contain)
BAD = [
    ('data.batch_size', 0, 'config.data.batch_size=0; expected an integer >= 1'),
    ('data.batch_size', 2.5, 'config.data.batch_size=2.5'),
    ('data.buckets', (), 'config.data.buckets'),
    ('data.overlong', 'crop', 'config.data.overlong'),
    ('eval.batch_size', 0, 'config.eval.batch_size'),
    ('eval.num_problems', -1, 'config.eval.num_problems'),
    ('eval.temperatures', (), 'config.eval.temperatures'),
    ('sampling.top_p', 0.0, 'config.sampling.top_p'),
    ('sampling.temperature', -1.0, 'config.sampling.temperature'),
    ('sampling.max_y2_tokens', 0, 'config.sampling.max_y2_tokens'),
    ('train.samples_per_prompt', 0, 'config.train.samples_per_prompt'),
    ('train.base_y1_fraction', 2.0, 'config.train.base_y1_fraction'),
    ('train.log_every', 0, 'config.train.log_every'),
    ('train.schedule', 'abc', 'config.train.schedule'),
    ('train.schedule', (('stage1', 5), ('stage3', 5)), 'config.train.schedule[1]'),
    ('train.schedule', (('stage1', -5),), 'config.train.schedule[0]'),
    ('train.schedule', (('stage1', 5.5),), 'config.train.schedule[0]'),
    ('checkpoint.keep', 0, 'config.checkpoint.keep'),
    ('loss.alpha', -1.0, 'config.loss.alpha=-1.0; expected >= 0'),
    ('loss.beta1', -0.1, 'config.loss.beta1'),
    ('loss.beta2', -1.0, 'config.loss.beta2'),
    ('loss.kl_estimator', 'k9', 'config.loss.kl_estimator'),
    ('optim.learning_rate', 0.0, 'config.optim.learning_rate'),
    ('optim.b1', 1.5, 'config.optim.b1'),
    ('optim.b2', 1.0, 'config.optim.b2'),
    ('optim.grad_accum_steps', 0, 'config.optim.grad_accum_steps'),
    ('optim.schedule', 'linear', 'config.optim.schedule'),
    ('model.preset', 'gemma9_huge', "unknown model preset 'gemma9_huge'"),
    ('task.name', 'sudoku', "'sudoku'"),
    ('mesh.strategy', 'zigzag', "unknown sharding strategy 'zigzag'"),
    ('seed', -1, 'config.seed'),
]


@pytest.mark.parametrize('field, value, expected', BAD, ids=[f'{b[0]}={b[1]!r}' for b in BAD])
def test_bad_field_is_named_in_one_line(field, value, expected, tmp_path):
  c = tiny_config(tmp_path)
  config_lib.validate(c)   # valid before the change
  _set(c, field, value)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert expected in str(e.value) and '\n' not in str(e.value)


def test_base_sft_section_is_checked_when_present():
  c = _load('configs/tiny.py')
  c.base_sft.batch_size = 0
  with pytest.raises(config_lib.ConfigError, match='config.base_sft.batch_size'):
    config_lib.validate(c)


def test_old_warmup_section_names_its_new_name():
  c = _load('configs/tiny.py')
  with c.unlocked():
    c.warmup = c.base_sft
    del c.base_sft
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert str(e.value) == ('the section config.warmup is now config.base_sft (same fields); '
                          'write config.base_sft')
  assert config_lib.renamed_section_error('warmup.steps') == (
      'config.warmup.steps: the section config.warmup is now config.base_sft (same fields); '
      'write config.base_sft.steps')
  assert config_lib.renamed_section_error('base_sft.steps') is None


def test_unknown_field_anywhere_is_refused(tmp_path):
  c = tiny_config(tmp_path)
  c.train.stage2_steps = 50      # a plausible typo: no such field
  with pytest.raises(config_lib.ConfigError, match=r'config\.train\.stage2_steps: unknown'):
    config_lib.validate(c)


def test_free_sections_take_any_key(tmp_path):
  c = tiny_config(tmp_path)
  c.task.fields.digits = 2
  c.model.overrides.num_layers = 1
  config_lib.validate(c)
  c.model.overrides.no_such_dim = 3   # checked by the model preset instead
  with pytest.raises(config_lib.ConfigError, match='no_such_dim'):
    config_lib.validate(c)
