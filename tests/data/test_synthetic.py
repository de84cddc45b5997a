"""Tests of score_jax.data.synthetic: exact rewards, splits, base_sft data."""
import numpy as np
import pytest

from score_jax.data import synthetic
from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib


@pytest.fixture(scope='module')
def task():
  return synthetic.SyntheticArithmeticTask(num_train=3000, num_test=500)


def test_problem_format(task):
  example = synthetic.make_example(0, 123, 456, 3)
  assert (example.question, example.answer) == ('123+456=', '0579')
  assert synthetic.make_example(0, 7, 8, 3).question == '007+008='
  assert synthetic.make_example(0, 999, 999, 3).answer == '1998'
  assert task.first_turn_prompt(example) == '123+456='


@pytest.mark.parametrize('response,expected', [
    ('0579', 1.0), ('  0579\n', 1.0), ('0579<end_of_turn>', 1.0),
    ('579', 0.0),  # The zero padding is part of the answer.
    ('0578', 0.0), ('0579 is the answer', 0.0), ('The answer: 0579', 0.0),
    ('05 79', 0.0), ('', 0.0), ('0579<end_of_turn>0579', 0.0),
])
def test_reward_is_exact(task, response, expected):
  example = synthetic.make_example(3, 123, 456, 3)
  assert task.reward(example, response) == expected


def test_extract_answer(task):
  assert task.extract_answer(' 0123 ') == '0123'
  assert task.extract_answer('12a') is None
  assert task.extract_answer('') is None


def test_batch_rewards(task):
  examples = [synthetic.make_example(i, i, i, 3) for i in range(4)]
  responses = ['0000', '0002', '0005', 'x']
  np.testing.assert_array_equal(task.rewards(examples, responses),
                                np.array([1, 1, 0, 0], np.float32))
  with pytest.raises(ValueError, match='2 examples but 1 responses'):
    task.rewards(examples[:2], responses[:1])


def test_split_is_disjoint_sized_and_seed_deterministic(task):
  train, test = task.load_examples('train'), task.load_examples('test')
  assert (len(train), len(test)) == (3000, 500)
  assert [e.index for e in train] == list(range(3000))
  key = lambda e: (min(e.a, e.b), max(e.a, e.b))
  train_keys, test_keys = set(map(key, train)), set(map(key, test))
  assert len(train_keys) == 3000 and len(test_keys) == 500
  assert not train_keys & test_keys  # Disjoint even up to a+b == b+a.
  assert all(int(e.answer) == e.a + e.b and 0 <= e.a < 1000 for e in train)
  again = synthetic.SyntheticArithmeticTask(num_train=3000, num_test=500)
  assert again.load_examples('train') == train
  other = synthetic.SyntheticArithmeticTask(num_train=3000, num_test=500,
                                            seed=1)
  assert other.load_examples('test') != test
  # The test set does not depend on how many training problems are drawn.
  more = synthetic.SyntheticArithmeticTask(num_train=4000, num_test=500)
  assert more.load_examples('test') == test


def test_split_asks_for_too_many():
  with pytest.raises(ValueError, match='only 55 distinct 1-digit'):
    synthetic.arithmetic_splits(0, digits=1, num_train=50, num_test=10)
  train, test = synthetic.arithmetic_splits(0, digits=1, num_train=45,
                                            num_test=10)
  assert len(train) + len(test) == 55


def test_base_sft_examples(task):
  problems = task.load_examples('train')[:2000]
  single, double = synthetic.base_sft_examples(problems, seed=0)
  assert len(single) == len(double) == 2000
  assert all(w.y2 is None and w.y1 == p.answer
             for w, p in zip(single, problems))
  assert all(w.y2 == p.answer and w.prompt == p.question
             for w, p in zip(double, problems))
  wrong = [w for w in double if not w.y1_correct]
  assert 0.45 < len(wrong) / 2000 < 0.55
  for w in wrong:
    changed = sum(a != b for a, b in zip(w.y1, w.y2))
    assert len(w.y1) == len(w.y2) and 1 <= changed <= 2 and w.y1.isdigit()
  assert all(w.y1 == w.y2 for w in double if w.y1_correct)
  assert synthetic.base_sft_examples(problems, seed=0) == (single, double)


def test_tokenizer_corpus_trains_a_digit_level_tokenizer(task):
  tok = tokenizer_lib.train_sentencepiece(task.tokenizer_corpus(500), 64)
  ids = tok.chat_prompt_ids('123+456=')
  pieces = [tok.id_to_piece(i) for i in ids]
  assert pieces == ['<bos>', '<start_of_turn>', 'user', '\n', '1', '2', '3',
                    '+', '4', '5', '6', '=', '<end_of_turn>', '\n',
                    '<start_of_turn>', 'model', '\n']
  assert tok.decode(tok.encode('0579')) == '0579'
  assert len(tok.encode('0123456789')) == 10


def test_make_task_by_name():
  made = tasks.make_task('synthetic_arithmetic', digits=2, num_train=10,
                         num_test=5)
  assert isinstance(made, synthetic.SyntheticArithmeticTask)
  assert made.load_examples('test')[0].question.endswith('=')
  assert len(made.load_examples('test')[0].question) == 6
  with pytest.raises(ValueError, match="task name 'nope' unknown"):
    tasks.make_task('nope')
