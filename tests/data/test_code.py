"""Tests of score_jax.data.code: MBPP/HumanEval loaders, prompts, rewards."""
import gzip
import importlib.util
import json

import numpy as np
import pytest

from score_jax.data import code

PAPER_CODE_CORRECTION = (
    'There might be an error in the code above because of lack of '
    'understanding of the question. Please correct the error, if any, and '
    'rewrite the solution. Only output the final correct Python program!')

needs_sandbox = pytest.mark.skipif(
    importlib.util.find_spec('score_jax.rewards.code') is None,
    reason='score_jax.rewards.code (the test sandbox) is not in this checkout')


def _mbpp_record(task_id, text='Write f.', code_='def f():\r\n  return 1',
                 tests=('assert f() == 1',)):
  return {'task_id': task_id, 'text': text, 'code': code_,
          'test_list': list(tests), 'test_setup_code': '',
          'challenge_test_list': []}


@pytest.fixture
def tiny_mbpp(tmp_path):
  (tmp_path / 'mbpp').mkdir()
  rows = [_mbpp_record(i, text=f'Task {i}.',
                       code_=f'def f{i}():\r\n  return {i}',
                       tests=(f'assert f{i}() == {i}', f'assert f{i}() > 0'))
          for i in (1, 2, 3, 4, 11, 600, 601)]
  (tmp_path / 'mbpp' / 'mbpp.jsonl').write_text(
      '\n'.join(json.dumps(r) for r in rows) + '\n')
  return tmp_path


def test_mbpp_standard_splits(shared_data):
  path = shared_data / 'mbpp/mbpp.jsonl'
  assert len(code.load_mbpp(path)) == 974
  sizes = {s: len(code.load_mbpp(path, s))
           for s in ('prompt', 'test', 'validation', 'train')}
  assert sizes == {'prompt': 10, 'test': 500, 'validation': 90, 'train': 374}
  train = code.load_mbpp(path, 'train')
  assert (train[0].task_id, train[-1].task_id) == (601, 974)
  assert [e.index for e in train] == list(range(374))
  assert all(isinstance(t, str) for e in train for t in e.test_list)


def test_humaneval_loads(shared_data):
  examples = code.load_humaneval(shared_data / 'humaneval/HumanEval.jsonl.gz')
  assert len(examples) == 164
  assert examples[0].task_id == 'HumanEval/0'
  assert examples[0].entry_point == 'has_close_elements'
  task = code.HumanEvalTask(data_dir=str(shared_data))
  assert task.load_examples('test') == examples
  assert task.first_turn_prompt(examples[3]) == examples[3].prompt


@pytest.mark.parametrize('bad_line,message', [
    ('{"task_id": 5, "text": "t", "code": "c", "test_list": ',
     r'mbpp\.jsonl:2: invalid JSON'),
    ('{"task_id": "5", "text": "t", "code": "c", "test_list": []}',
     r"mbpp\.jsonl:2: field 'task_id' is str"),
    ('{"task_id": 5, "code": "c", "test_list": []}',
     r"mbpp\.jsonl:2: field 'text' missing"),
    ('{"task_id": 5, "text": "t", "code": "c", "test_list": [1]}',
     r"mbpp\.jsonl:2: field 'test_list\[0\]' is int"),
])
def test_mbpp_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
  path = tmp_path / 'mbpp.jsonl'
  path.write_text(json.dumps(_mbpp_record(1)) + '\n' + bad_line + '\n')
  with pytest.raises(ValueError, match=message):
    code.load_mbpp(path)


def test_humaneval_malformed_line_names_file_and_line(tmp_path):
  path = tmp_path / 'he.jsonl.gz'
  good = {'task_id': 'x', 'prompt': 'p', 'entry_point': 'f',
          'canonical_solution': 's', 'test': 't'}
  with gzip.open(path, 'wt') as f:
    f.write(json.dumps(good) + '\n\n' + json.dumps({**good, 'test': None}))
  with pytest.raises(ValueError, match=r"he\.jsonl\.gz:3: field 'test' is "
                     'NoneType'):
    code.load_humaneval(path)


def test_mbpp_prompt_is_the_standard_three_shot(tiny_mbpp):
  task = code.MBPPTask(data_dir=str(tiny_mbpp))
  target = task.load_examples('test')[0]
  assert target.task_id == 11
  shot = ('You are an expert Python programmer, and here is your task: Task '
          '{i}. Your code should pass these tests:\n\nassert f{i}() == {i}\n'
          'assert f{i}() > 0\n[BEGIN]\ndef f{i}():\n  return {i}\n[DONE]\n')
  expected = (shot.format(i=2) + shot.format(i=3) + shot.format(i=4) +
              'You are an expert Python programmer, and here is your task: '
              'Task 11. Your code should pass these tests:\n\nassert f11() == '
              '11\nassert f11() > 0\n[BEGIN]\n')
  assert task.first_turn_prompt(target) == expected
  assert task.correction_instruction == PAPER_CODE_CORRECTION
  zero_shot = code.MBPPTask(data_dir=str(tiny_mbpp), few_shot_ids=())
  assert zero_shot.first_turn_prompt(target) == expected[-len(
      zero_shot.first_turn_prompt(target)):]
  assert zero_shot.first_turn_prompt(target).startswith('You are an expert')


def test_mbpp_few_shot_ids_are_checked(tiny_mbpp):
  task = code.MBPPTask(data_dir=str(tiny_mbpp), few_shot_ids=(2, 99))
  with pytest.raises(ValueError, match=r'few_shot_ids \[99\] not found'):
    task.first_turn_prompt(task.load_examples('test')[0])


def test_humaneval_correction_instruction_is_the_papers():
  assert code.HumanEvalTask().correction_instruction == PAPER_CODE_CORRECTION


@pytest.mark.parametrize('response,expected', [
    ('def f():\n  return 1\n[DONE]\nmore', 'def f():\n  return 1'),
    ('[BEGIN]\ndef f():\n  return 1\n[DONE]', 'def f():\n  return 1'),
    ('Here:\n```python\ndef f():\n  return 2\n```\ntext',
     'def f():\n  return 2'),
    ('```\nx = 1\n```', 'x = 1'),
    ('    return 1\n<end_of_turn>', '    return 1'),
    ('', None), ('[DONE]', None),
])
def test_extract_program(response, expected):
  assert code.extract_program(response) == expected


def test_humaneval_completion_or_full_function():
  example = code.HumanEvalExample(
      0, 'HumanEval/x', 'import math\n\ndef g(x):\n    """Doc."""\n', 'g',
      '    return x\n', 'def check(candidate):\n    assert candidate(2) == 2\n')
  task = code.HumanEvalTask()
  assert task.completion(example, '    return x\n') == '    return x'
  full = '```python\ndef g(x):\n    return math.floor(x)\n```'
  assert task.completion(example, full) == (
      '\ndef g(x):\n    return math.floor(x)')


@needs_sandbox
def test_mbpp_rewards_run_the_tests(shared_data):
  task = code.MBPPTask(data_dir=str(shared_data), num_workers=2)
  examples = task.load_examples('test')[:4]
  right = [f'[BEGIN]\n{e.code}\n[DONE]' for e in examples]
  wrong = ['def nothing():\n  pass'] * 4
  assert task.reward(examples[0], right[0]) == 1.0
  assert task.reward(examples[0], wrong[0]) == 0.0
  np.testing.assert_array_equal(task.rewards(examples + examples,
                                             right + wrong),
                                [1.0] * 4 + [0.0] * 4)


@needs_sandbox
def test_humaneval_rewards_run_the_tests(shared_data):
  task = code.HumanEvalTask(data_dir=str(shared_data), num_workers=2)
  examples = task.load_examples('test')[:3]
  right = [e.canonical_solution for e in examples]
  full = [f'```python\n{e.prompt}{e.canonical_solution}```' for e in examples]
  wrong = ['    return None\n'] * 3
  np.testing.assert_array_equal(
      task.rewards(examples * 3, right + full + wrong), [1.0] * 6 + [0.0] * 3)
