"""Tests of score_jax.data.arithmetic: exact answers, knobs, splits and grading."""
import pytest

from score_jax.data import arithmetic
from score_jax.data import tasks


@pytest.mark.parametrize('operands,ops,want', [
    ((3, 4), ('+',), 7), ((3, 4), ('-',), -1), ((7, 8, 23), ('*', '-'), 33),
    ((2, 3, 4), ('+', '*'), 14), ((9, 2, 5), ('-', '-'), 2), ((2, 3, 4), ('*', '*'), 24)])
def test_evaluate_uses_the_usual_precedence(operands, ops, want):
  assert arithmetic.evaluate(operands, ops) == want
  text = arithmetic.make_example(0, operands, ops).expression
  assert eval(text) == want   # pylint: disable=eval-used  (Python's own precedence)


def test_splits_are_disjoint_deterministic_and_follow_the_knobs():
  task = tasks.make_task('arithmetic', num_operands=3, digits=(2, 1, 1), operators='+*',
                         num_train=300, num_test=100, num_shots=4, seed=3)
  train, test = task.load_examples('train'), task.load_examples('test')
  assert len(train) == 300 and len(test) == 100
  assert [e.index for e in train] == list(range(300))
  key = lambda e: (e.operands, e.ops)
  shots = {(q, a) for q, a in task.few_shot_format().shots}
  assert not {key(e) for e in train} & {key(e) for e in test}
  assert not shots & {(task.first_turn_prompt(e), e.answer) for e in train + test}
  for e in train + test:
    assert 10 <= e.operands[0] <= 99 and all(0 <= x <= 9 for x in e.operands[1:])
    assert set(e.ops) <= {'+', '*'} and e.answer == str(eval(e.expression))  # pylint: disable=eval-used
  assert task.load_examples('test') == test   # the same seed draws the same problems
  assert arithmetic.ArithmeticTask(num_train=300, num_test=100, seed=4,
                                   num_operands=3, digits=(2, 1, 1),
                                   operators='+*').load_examples('test') != test


@pytest.mark.parametrize('fields,match', [
    (dict(num_operands=1), 'num_operands'), (dict(operators='/'), 'operators'),
    (dict(digits=(1, 2, 3)), 'digits'), (dict(digits=0), 'digits'),
    (dict(num_train=100, num_test=10), 'distinct')])
def test_bad_knobs_name_the_field(fields, match):
  with pytest.raises(ValueError, match=match):
    arithmetic.ArithmeticTask(**fields).load_examples('test')


@pytest.mark.parametrize('response,reward', [
    (' 33', 1.0), ('33', 1.0), (' 33.', 1.0), (' 033', 1.0), (' 34', 0.0),
    (' 33 apples', 0.0), ('', 0.0), (' -33', 0.0), (' thirty-three', 0.0)])
def test_reward_is_exact_integer_match(response, reward):
  example = arithmetic.make_example(0, (7, 8, 23), ('*', '-'))
  assert arithmetic.ArithmeticTask().reward(example, response) == reward


def test_negative_answers_are_graded():
  example = arithmetic.make_example(0, (3, 9), ('-',))
  task = arithmetic.ArithmeticTask()
  assert task.reward(example, ' -6') == 1.0 and task.reward(example, ' 6') == 0.0
