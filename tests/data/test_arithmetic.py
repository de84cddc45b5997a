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


def test_shots_change_answer_alternates_fixes_and_breaks_with_no_net_gain():
  task = tasks.make_task('arithmetic', digits=(2, 1), num_train=100, num_test=50,
                         num_shots=4, shots_show_second_turn=True, shots_change_answer=2)
  fmt = task.few_shot_format()
  (a1, b1), (a2, b2), (a3, b3), (a4, b4) = fmt.shot_turns
  right = [a for _, a in fmt.shots]
  # Shot 1 fixes a wrong first answer, shot 2 breaks a right one, the rest repeat.
  assert a1 != right[0] and b1 == right[0] and a2 == right[1] and b2 != right[1]
  assert (a3, b3, a4, b4) == (right[2], right[2], right[3], right[3])
  assert all(1 <= abs(int(w) - int(r)) <= 9 for w, r in ((a1, right[0]), (b2, right[1])))
  # Greedy y1 then y2 of a model that imitates the shots: as many fixes as breaks.
  fixes = sum(x != r and y == r for (x, y), r in zip(fmt.shot_turns, right))
  breaks = sum(x == r and y != r for (x, y), r in zip(fmt.shot_turns, right))
  assert fixes == breaks == 1


@pytest.mark.parametrize('fields', [dict(shots_change_answer=5, shots_show_second_turn=True),
                                    dict(shots_change_answer=2),
                                    dict(shots_change_answer=-1, shots_show_second_turn=True)])
def test_bad_shots_change_answer_names_the_field(fields):
  task = tasks.make_task('arithmetic', num_train=50, num_test=20, num_shots=4, **fields)
  with pytest.raises(ValueError, match='field shots_change_answer'):
    task.few_shot_format()
