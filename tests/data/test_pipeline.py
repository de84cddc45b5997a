"""Tests of score_jax.data.pipeline: shards, restore, buckets, long prompts."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from score_jax.batches import PromptBatch
from score_jax.data import pipeline
from score_jax.data import synthetic
from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True)
class _Example:
  index: int
  length: int


class _DigitsTask(tasks.Task):
  """Prompt of example i: `length` sevens, i.e. `length` tokens of body."""
  name = 'digits'
  correction_instruction = 'Fix.'

  def load_examples(self, split):
    raise NotImplementedError

  def first_turn_prompt(self, example):
    return '12' + '7' * (example.length - 2)

  def extract_answer(self, text):
    return text

  def reward(self, example, response):
    return 0.0


@pytest.fixture(scope='module')
def arithmetic():
  return synthetic.SyntheticArithmeticTask(num_train=203, num_test=10)


@pytest.fixture(scope='module')
def tok(arithmetic):
  return tokenizer_lib.train_sentencepiece(arithmetic.tokenizer_corpus(200),
                                           64)


def _overhead(tok):
  return len(tok.chat_prompt_ids(''))


def _build(examples, task, tok, **kwargs):
  kwargs.setdefault('batch_size', 4)
  kwargs.setdefault('buckets', (32,))
  kwargs.setdefault('process_index', 0)
  kwargs.setdefault('process_count', 1)
  return pipeline.PromptPipeline(examples, task, tok, **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batch_format(arithmetic, tok):
  examples = arithmetic.load_examples('train')
  batch = next(iter(_build(examples, arithmetic, tok)))
  assert isinstance(batch, PromptBatch)
  assert batch.ids_BP.dtype == np.int32
  assert batch.ids_BP.shape == batch.mask_BP.shape == (4, 32)
  assert batch.mask_BP.dtype == bool and batch.index_B.dtype == np.int32
  for row, index in enumerate(batch.index_B):
    expected = tok.chat_prompt_ids(examples[index].question)
    n = len(expected)
    assert batch.ids_BP[row, :n].tolist() == expected
    assert batch.mask_BP[row].tolist() == [True] * n + [False] * (32 - n)
    assert (batch.ids_BP[row, n:] == tok.pad_id).all()  # RIGHT-padded.


def test_two_processes_shard_disjointly_and_cover_one_epoch(arithmetic, tok):
  examples = arithmetic.load_examples('train')[:200]
  seen = []
  for process_index in range(2):
    shard = _build(examples, arithmetic, tok, num_epochs=1, seed=3,
                   process_index=process_index, process_count=2)
    assert shard.shard_size == 100
    seen.append([int(i) for b in shard for i in b.index_B])
  assert len(seen[0]) == len(seen[1]) == 100
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(200))


def test_uneven_shards_yield_equal_batch_counts(arithmetic, tok):
  examples = arithmetic.load_examples('train')[:9]
  eval_shards = [list(_build(examples, arithmetic, tok, num_epochs=1,
                             shuffle=False, drop_remainder=False,
                             process_index=p, process_count=2))
                 for p in range(2)]
  assert [len(s) for s in eval_shards] == [2, 2]
  indices = [int(i) for s in eval_shards for b in s for i in b.index_B]
  assert sorted(i for i in indices if i >= 0) == list(range(9))
  assert indices.count(pipeline.PAD_INDEX) == 16 - 9
  for shard in eval_shards:
    for batch in shard:
      pad_rows = batch.index_B == pipeline.PAD_INDEX
      assert not batch.mask_BP[pad_rows].any()
  train_shards = [list(_build(examples, arithmetic, tok, num_epochs=2,
                              drop_remainder=True, process_index=p,
                              process_count=2)) for p in range(2)]
  assert [len(s) for s in train_shards] == [2, 2]  # 4 of 5 and 4 of 4, x2.


def test_epochs_reshuffle_and_are_repeatable(arithmetic, tok):
  examples = arithmetic.load_examples('train')[:200]
  it = iter(_build(examples, arithmetic, tok, batch_size=50, seed=5))
  epochs = [np.concatenate([b.index_B for b in _take(it, 4)])
            for _ in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(200))
  assert epochs[0].tolist() != epochs[1].tolist()
  again = iter(_build(examples, arithmetic, tok, batch_size=50, seed=5))
  assert np.concatenate([b.index_B for b in _take(again, 4)]).tolist() == (
      epochs[0].tolist())


@pytest.mark.parametrize('k', [0, 3, 7])
def test_restored_iterator_continues_exactly(arithmetic, tok, k):
  examples = arithmetic.load_examples('train')
  make = lambda: _build(examples, arithmetic, tok, batch_size=16, seed=11,
                        process_index=1, process_count=2)
  uninterrupted = iter(make())
  _take(uninterrupted, k)
  state = json.loads(json.dumps(uninterrupted.get_state()))  # JSON-able.
  expected = _take(uninterrupted, 6)  # Crosses an epoch boundary (k=7).
  restored = iter(make())
  restored.set_state(state)
  for want, got in zip(expected, _take(restored, 6)):
    jax.tree.map(np.testing.assert_array_equal, want, got)


def test_batches_pad_to_the_smallest_fitting_bucket(tok):
  overhead = _overhead(tok)
  lengths = [4, 5, 20, 3, 30, 2]  # Body lengths; batches of 2 in order.
  examples = [_Example(i, n) for i, n in enumerate(lengths)]
  batches = list(_build(examples, _DigitsTask(), tok, batch_size=2,
                        buckets=(overhead + 5, overhead + 20, overhead + 40),
                        shuffle=False, num_epochs=1))
  assert [b.ids_BP.shape[1] for b in batches] == [
      overhead + 5, overhead + 20, overhead + 40]
  assert batches[0].mask_BP.sum(axis=1).tolist() == [overhead + 4,
                                                            overhead + 5]


def test_overlong_prompts_are_dropped_and_counted(tok):
  overhead = _overhead(tok)
  examples = [_Example(i, n) for i, n in enumerate([5, 50, 6, 60, 7, 8])]
  pipe = _build(examples, _DigitsTask(), tok, batch_size=2,
                buckets=(overhead + 10,), shuffle=False, num_epochs=1)
  assert (pipe.stats.num_dropped, pipe.stats.num_truncated) == (2, 0)
  assert pipe.stats.num_kept == 4
  assert [i for b in pipe for i in b.index_B.tolist()] == [0, 2, 4, 5]


def test_overlong_prompts_are_truncated_keeping_the_chat_frame(tok):
  overhead = _overhead(tok)
  examples = [_Example(0, 5), _Example(1, 50)]
  pipe = _build(examples, _DigitsTask(), tok, batch_size=2,
                buckets=(overhead + 10,), shuffle=False, num_epochs=1,
                overlong='truncate')
  assert (pipe.stats.num_dropped, pipe.stats.num_truncated) == (0, 1)
  batch = next(iter(pipe))
  row = batch.ids_BP[1]
  assert batch.mask_BP[1].all()
  assert tok.decode(row) == ('<start_of_turn>user\n' + '7' * 10 +
                             '<end_of_turn>\n<start_of_turn>model\n')
  assert row[0] == tok.bos_id


def test_bad_arguments(arithmetic, tok):
  examples = arithmetic.load_examples('train')[:8]
  with pytest.raises(ValueError, match="'overlong' is 'cut'"):
    _build(examples, arithmetic, tok, overlong='cut')
  with pytest.raises(ValueError, match="'buckets'"):
    _build(examples, arithmetic, tok, buckets=(64, 32))
  with pytest.raises(ValueError, match='process_index 2'):
    _build(examples, arithmetic, tok, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='no prompt fits in 4 tokens'):
    _build(examples, arithmetic, tok, buckets=(4,))


def test_defaults_to_jax_process(arithmetic, tok):
  pipe = pipeline.PromptPipeline(arithmetic.load_examples('train')[:8],
                                 arithmetic, tok, batch_size=4,
                                 buckets=(32,))
  assert pipe.shard_size == 8  # One JAX process in tests.
