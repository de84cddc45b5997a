"""The public API: lazy names, FunctionTask, checkpoints read back without an optimizer."""
import subprocess
import sys

import jax
import numpy as np
import pytest

import score_jax
from score_jax.data import function_task
from score_jax.data.tokenizer import END_OF_TURN
from score_jax.models.checkpoints import save_safetensors
from score_jax.training import state as state_lib
from tests.training.tiny_config import run_config


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_import_is_cheap_and_names_resolve():
  code = ('import sys, score_jax; assert "jax" not in sys.modules, "jax imported"; '
          'print(sorted(n for n in score_jax.__all__ if not hasattr(score_jax, n)))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == '[]'
  with pytest.raises(AttributeError, match='no attribute'):
    score_jax.nonexistent  # pylint: disable=pointless-statement


def test_function_task_calls_the_users_functions():
  seen = []

  def reward(problem, text):
    seen.append((problem, text))
    return float(text == problem['answer'])

  task = score_jax.task([{'q': '1+1', 'answer': '2'}, {'q': '2+2', 'answer': '4'}],
                        lambda p: p['q'] + '=', reward, test_problems=[{'q': '3+3',
                                                                        'answer': '6'}])
  train, test = task.load_examples('train'), task.load_examples('test')
  assert [e.index for e in train] == [0, 1] and [e.index for e in test] == [0]
  assert task.first_turn_prompt(train[1]) == '2+2='
  assert task.correction_instruction == function_task.PAPER_CORRECTION_INSTRUCTION
  np.testing.assert_array_equal(task.rewards(train, [f' 2{END_OF_TURN}', '5']), [1.0, 0.0])
  assert seen == [({'q': '1+1', 'answer': '2'}, '2'), ({'q': '2+2', 'answer': '4'}, '5')]
  corpus = ''.join(task.tokenizer_corpus())
  assert '3+3=' in corpus and task.correction_instruction in corpus


def test_function_task_rejects_bad_input():
  with pytest.raises(ValueError, match='non-empty list'):
    score_jax.task([], str, lambda p, t: 1.0)
  with pytest.raises(ValueError, match='callables'):
    score_jax.task(['a'], 'not a function', lambda p, t: 1.0)
  with pytest.raises(ValueError, match="expected 'train' or 'test'"):
    score_jax.task(['a'], str, lambda p, t: 1.0).load_examples('dev')


def test_trained_params_load_back_without_an_optimizer(tmp_path, monkeypatch):
  exp = score_jax.Experiment(run_config(tmp_path, schedule=(('stage1', 1), ('stage2', 1))))
  base = exp.init_params(0)
  result = score_jax.train(exp, base)
  # An existing Task subclass (synthetic addition) through sample(): every held-out
  # problem once, scored by the task's own reward of the decoded text.
  turns = score_jax.sample(exp, result.params, split='test')
  assert sorted(t.problem.question for t in turns) == sorted(
      e.question for e in exp.task.load_examples('test'))
  assert [t.r2 for t in turns] == [exp.task.reward(t.problem, t.y2) for t in turns]

  def no_optimizer(*a, **kw):
    raise AssertionError('load_trained built an optimizer / train state')

  monkeypatch.setattr(state_lib, 'make_optimizer', no_optimizer)
  monkeypatch.setattr(state_lib, 'init_train_state', no_optimizer)
  _leaves_equal(score_jax.load_trained(exp), result.params)
  _leaves_equal(score_jax.load_trained(exp, step=2), result.params)
  with pytest.raises(FileNotFoundError, match='no checkpoints'):
    score_jax.load_trained(exp, workdir=tmp_path / 'elsewhere')


def test_params_save_and_load_round_trip(tmp_path):
  model_cfg, params = score_jax.load_model('gemma3_tiny', seed=3, num_layers=1)
  path = score_jax.save_params(tmp_path / 'p', params)
  _leaves_equal(score_jax.load_params(path, model_cfg), params)
  hf_dir = tmp_path / 'hf'                  # an HF directory: config.json + safetensors
  save_safetensors(hf_dir, model_cfg, params)
  hf_cfg, hf_params = score_jax.load_model(hf_dir)
  assert (hf_cfg.num_layers, hf_cfg.embed_dim) == (1, model_cfg.embed_dim)
  _leaves_equal(hf_params, params)
  with pytest.raises(FileNotFoundError, match='neither a preset'):
    score_jax.load_model(tmp_path / 'missing')
