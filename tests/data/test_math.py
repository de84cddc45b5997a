"""Tests of score_jax.data.math: loaders, the paper's splits, MathTask."""
import importlib.util
import json

import pytest

from score_jax.data import math as math_data

# The paper's prompts, copied from shared/design/score-method.md.
PAPER_FIRST_TURN = (
    'You are a math expert. When you respond, respond only with the Solution '
    'of the final Problem, thinking step by step. At the end of the Solution, '
    'when you give your final answer, write it in the form "Final Answer: The '
    'final answer is $answer$. I hope it is correct."')
PAPER_CORRECTION = (
    'There might be an error in the solution above because of lack of '
    'understanding of the question. Please correct the error, if any, and '
    'rewrite the solution. Only output the final solution! At the end of the '
    'Solution, when you give your final answer, write it in the form "Final '
    'Answer: The final answer is $answer$. I hope it is correct."')

# Answers are extracted (and graded) by score_jax.rewards.math.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('score_jax.rewards.math') is None,
    reason='score_jax.rewards.math (the MATH grader) is not in this checkout')


def _write(path, lines):
  path.write_text('\n'.join(lines) + '\n')
  return path


def test_shared_files_load_with_documented_counts(shared_data):
  assert len(math_data.load_math(shared_data / 'math/train.jsonl')) == 7500
  test = math_data.load_math(shared_data / 'math/test.jsonl')
  assert len(test) == 5000
  assert [e.index for e in test] == list(range(5000))


def test_paper_splits(shared_data):
  train, math500 = math_data.load_paper_math_splits(shared_data)
  assert (len(train), len(math500)) == (12000, 500)
  assert [e.index for e in train] == list(range(12000))
  eval_ids = {e.unique_id for e in math500}
  assert len(eval_ids) == 500
  train_ids = [e.unique_id for e in train]
  assert len(set(train_ids)) == 12000 and not eval_ids & set(train_ids)
  assert sum(i.startswith('test/') for i in train_ids) == 4500
  test_ids = {e.unique_id for e in math_data.load_math(
      shared_data / 'math/test.jsonl')}
  assert eval_ids <= test_ids


def test_answers_from_solutions_match_math500_published_answers(
    shared_data):
  """The answer taken from a test solution is PRM800K's, on all 500."""
  _, math500 = math_data.load_paper_math_splits(shared_data)
  test = {e.unique_id: e for e in math_data.load_math(
      shared_data / 'math/test.jsonl')}
  for e in math500:
    assert test[e.unique_id].answer == e.answer, e.unique_id


def test_nested_and_empty_boxes(tmp_path):
  path = _write(tmp_path / 'm.jsonl', [
      json.dumps({'problem': 'p', 'solution': r'$\boxed{1}$ or $\boxed{'
                  r'\frac{1}{2}}$.'}),
      json.dumps({'problem': 'q', 'solution': r'there are $\boxed{}$'})])
  assert [e.answer for e in math_data.load_math(path)] == [r'\frac{1}{2}', '']


GOOD = json.dumps({'problem': 'p', 'solution': r'$\boxed{3}$'})


@pytest.mark.parametrize('bad_line,message', [
    ('{"problem": "p", "solution": ', r'bad\.jsonl:2: invalid JSON'),
    ('[1, 2]', r'bad\.jsonl:2: expected a JSON object'),
    ('{"solution": "\\\\boxed{1}"}', r"bad\.jsonl:2: field 'problem' missing"),
    ('{"problem": "p", "solution": 5}',
     r"bad\.jsonl:2: field 'solution' is int"),
    ('{"problem": "p", "solution": "no box"}',
     r"bad\.jsonl:2: field 'solution' has no \\boxed"),
])
def test_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
  path = _write(tmp_path / 'bad.jsonl', [GOOD, bad_line, GOOD])
  with pytest.raises(ValueError, match=message):
    math_data.load_math(path)


def test_json_array_and_directory_layouts(tmp_path):
  records = [{'problem': 'a', 'solution': r'\boxed{1}', 'type': 'Algebra',
              'level': 'Level 1'},
             {'problem': 'b', 'solution': r'\boxed{2}'}]
  (tmp_path / 'all.json').write_text(json.dumps(records))
  loaded = math_data.load_math(tmp_path / 'all.json')
  assert [(e.problem, e.answer, e.subject) for e in loaded] == [
      ('a', '1', 'Algebra'), ('b', '2', '')]
  root = tmp_path / 'MATH' / 'test' / 'algebra'
  root.mkdir(parents=True)
  (root / '5.json').write_text(json.dumps(records[0]))
  loaded = math_data.load_math(tmp_path / 'MATH' / 'test')
  assert loaded[0].unique_id == 'test/algebra/5.json'
  assert loaded[0].answer == '1'


def test_split_by_ids_reports_missing_ids():
  examples = [math_data.MathExample(0, 'a', 'p', 's', '1')]
  with pytest.raises(ValueError, match=r'm500\.jsonl: 1 unique_ids not found'):
    math_data.split_by_ids(examples, {'a', 'b'}, 'm500.jsonl')


def test_prompts_are_the_papers():
  task = math_data.MathTask()
  example = math_data.MathExample(0, 'id', 'What is $1+1$?', 's', '2')
  prompt = task.first_turn_prompt(example)
  assert prompt.startswith(PAPER_FIRST_TURN)
  assert prompt.endswith('What is $1+1$?')
  assert task.correction_instruction == PAPER_CORRECTION
  custom = math_data.MathTask(instruction='Solve.',
                              prompt_template='{instruction} {problem}')
  assert custom.first_turn_prompt(example) == 'Solve. What is $1+1$?'


def test_load_examples_needs_a_data_dir():
  with pytest.raises(ValueError, match="'data_dir' is empty"):
    math_data.MathTask().load_examples('train')


def test_reward_of_ground_truth_solution_is_one(shared_data):
  task = math_data.MathTask(data_dir=str(shared_data))
  math500 = task.load_examples('test')
  examples = math500[:20]
  assert all(task.reward(e, e.solution) == 1.0 for e in examples)
  wrong = [e.solution.replace(r'\boxed{', r'\boxed{9') for e in examples]
  assert list(task.rewards(examples, [e.solution for e in examples])) == [
      1.0] * 20
  assert task.rewards(examples, wrong).sum() == 0
