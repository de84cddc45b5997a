"""Grain pipelines of first-turn prompts: shard, shuffle, tokenise, batch.

Each batch is a batches.PromptBatch of numpy arrays:
  ids_BP:   int32  the prompt in the task's format (chat or few-shot),
                   RIGHT-padded with pad_id;
  mask_BP:  bool   True on real tokens;
  index_B:  int32  `example.index` (the host looks the example up to compute
                   rewards); -1 marks a padding row.
P is the smallest bucket that holds the batch's longest prompt, so a jitted
sampler compiles once per bucket. Prompts longer than the largest bucket are
dropped or truncated, and counted.

Determinism: the shuffle is seeded and reshuffled each epoch (grain folds the
epoch into the seed), and the iterator's `get_state()` is a small JSON-able
dict; `set_state()` on a fresh iterator of an identically built pipeline
continues exactly where the saved one stopped.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Sequence

from absl import logging
import grain
import numpy as np

from score_jax.data import prompt_format as prompt_format_lib
from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.batches import PromptBatch

PAD_INDEX = -1
_OVERLONG_MODES = ('drop', 'truncate')


@dataclasses.dataclass(frozen=True)
class PromptStats:
  """What tokenisation did to the examples (before sharding)."""
  num_examples: int
  num_kept: int
  num_dropped: int
  num_truncated: int
  max_length: int  # Of the kept prompts, after truncation.


def tokenize_prompts(
    examples: Sequence[Any], task: tasks.Task,
    tokenizer: tokenizer_lib.Tokenizer, max_length: int,
    overlong: str = 'drop'
) -> tuple[list[tuple[int, np.ndarray]], PromptStats]:
  """Prompt ids of every example in the task's format, over-long ones handled.

  Args:
    examples: the task's examples (each with an `index`).
    task: gives the first-turn user text.
    tokenizer: encodes the prompt format's text.
    max_length: the largest allowed prompt length (the largest bucket).
    overlong: 'drop' skips longer prompts; 'truncate' keeps the format's
      header and footer (chat markers, few-shot shots) and the END of the
      question (where the MBPP task and the MATH question sit), cutting from
      the question's start.

  Returns:
    [(example.index, int32 ids)] in the order of `examples`, and the counts.
  """
  if overlong not in _OVERLONG_MODES:
    raise ValueError(f"pipeline field 'overlong' is {overlong!r}; expected "
                     f'one of {_OVERLONG_MODES}')
  fmt = prompt_format_lib.for_task(task)
  items, dropped, truncated = [], 0, 0
  for example in examples:
    text = task.first_turn_prompt(example)
    ids = fmt.prompt_ids(tokenizer, text)
    if len(ids) > max_length:
      if overlong == 'drop':
        dropped += 1
        continue
      header, body, footer = fmt.prompt_parts(tokenizer, text)
      keep = max_length - len(header) - len(footer)
      if keep <= 0:
        raise ValueError(
            f'{task.name} example {example.index}: the prompt header and footer '
            f'alone take {len(header) + len(footer)} tokens; expected fewer '
            f'than the largest bucket, {max_length}')
      ids = header + body[len(body) - keep:] + footer
      truncated += 1
    items.append((int(example.index), np.asarray(ids, dtype=np.int32)))
  stats = PromptStats(
      num_examples=len(examples), num_kept=len(items), num_dropped=dropped,
      num_truncated=truncated,
      max_length=max((len(ids) for _, ids in items), default=0))
  if dropped or truncated:
    logging.warning(
        '%s prompts: %d of %d longer than %d tokens were %s.', task.name,
        dropped + truncated, len(examples), max_length,
        'dropped' if dropped else 'truncated')
  if not items:
    raise ValueError(f'{task.name}: no prompt fits in {max_length} tokens '
                     f'({len(examples)} examples, all dropped)')
  return items, stats


def collate(items: Sequence[tuple[int, np.ndarray]], batch_size: int,
            buckets: Sequence[int], pad_id: int) -> PromptBatch:
  """Pads `items` to [batch_size, bucket]; missing rows get index -1."""
  longest = max(len(ids) for _, ids in items)
  bucket = buckets[bisect.bisect_left(buckets, longest)]
  prompt_ids_BP = np.full((batch_size, bucket), pad_id, dtype=np.int32)
  prompt_mask_BP = np.zeros((batch_size, bucket), dtype=bool)
  index_B = np.full((batch_size,), PAD_INDEX, dtype=np.int32)
  for row, (index, ids) in enumerate(items):
    if index == PAD_INDEX:
      continue
    prompt_ids_BP[row, :len(ids)] = ids
    prompt_mask_BP[row, :len(ids)] = True
    index_B[row] = index
  return PromptBatch(ids_BP=prompt_ids_BP, mask_BP=prompt_mask_BP, index_B=index_B)


def _checked_buckets(batch_size: int,
                     buckets: Sequence[int]) -> tuple[int, ...]:
  """`buckets` as a tuple of ints, after checking it and `batch_size`."""
  if batch_size <= 0:
    raise ValueError(f"pipeline field 'batch_size' is {batch_size}; "
                     'expected > 0')
  buckets = tuple(int(b) for b in buckets)
  if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
    raise ValueError(f"pipeline field 'buckets' is {buckets}; expected "
                     'strictly increasing positive lengths')
  return buckets


def _process_slot(process_index: int | None,
                  process_count: int | None) -> tuple[int, int]:
  """(process_index, process_count), jax's where None, checked to fit."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = (jax.process_index() if process_index is None
                     else process_index)
    process_count = (jax.process_count() if process_count is None
                     else process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'pipeline: process_index {process_index} not in '
                     f'[0, process_count={process_count})')
  return process_index, process_count


def _shard(items: Sequence[tuple[int, np.ndarray]], process_index: int,
           process_count: int, num_epochs: int | None,
           drop_remainder: bool) -> grain.MapDataset:
  """This process's items, process_index::process_count.

  With finite epochs every shard gets the same length, so every process
  yields the same number of batches: the long shards lose their last item
  when `drop_remainder`, else the short ones gain one padding row (index -1).

  Raises:
    ValueError: the shard is empty (fewer items than processes).
  """
  ds = grain.MapDataset.source(items)[process_index::process_count]
  if num_epochs is not None:
    equal = len(items) // process_count
    if drop_remainder:
      ds = ds[:equal]
    elif len(ds) <= equal and len(items) % process_count:
      filler = (PAD_INDEX, np.zeros((1,), np.int32))
      ds = grain.MapDataset.concatenate(
          [ds, grain.MapDataset.source([filler])])
  if not len(ds):
    raise ValueError(
        f'pipeline: process {process_index} of {process_count} gets no '
        f'examples ({len(items)} kept); expected at least one per process')
  return ds


class PromptPipeline:
  """A grain pipeline of prompt batches for one JAX process.

  Iterate it (`it = iter(pipeline)`) for a grain DatasetIterator; save
  `it.get_state()` with a checkpoint and restore with `it.set_state(state)`
  on a fresh iterator of a pipeline built with the same arguments.

  Sharding: each process reads examples process_index::process_count (after
  tokenisation, so every process sees the same kept set). With finite
  epochs, shards are made equal length so every process yields the same
  number of batches: padding rows (index -1) when drop_remainder is False, one
  dropped example per short shard when it is True.

  Attributes:
    dataset: the grain IterDataset.
    stats: tokenisation counts (over all processes' examples).
    shard_size: examples in this process's shard (padding rows included).
  """

  def __init__(
      self,
      examples: Sequence[Any],
      task: tasks.Task,
      tokenizer: tokenizer_lib.Tokenizer,
      *,
      batch_size: int,
      buckets: Sequence[int],
      seed: int = 0,
      shuffle: bool = True,
      num_epochs: int | None = None,
      drop_remainder: bool = True,
      overlong: str = 'drop',
      process_index: int | None = None,
      process_count: int | None = None,
      read_options: grain.ReadOptions | None = None,
  ):
    """Builds the pipeline.

    Args:
      examples: the task's examples, each with an `index`.
      task: formats prompts (its prompt_format).
      tokenizer: tokenises them.
      batch_size: rows per batch on this process (fixed).
      buckets: increasing prompt lengths to pad to; the last is the maximum
        (a run's come from config.data.buckets, their one home).
      seed: the shuffle seed (the same on every process).
      shuffle: shuffle within the shard, differently each epoch.
      num_epochs: passes over the data; None repeats forever (training).
      drop_remainder: drop a last partial batch (training) or pad it with
        index -1 rows (evaluation).
      overlong: 'drop' or 'truncate' prompts longer than `buckets[-1]`.
      process_index: this process; defaults to jax.process_index().
      process_count: all processes; defaults to jax.process_count().
      read_options: grain threading; defaults to 2 threads, 16 prefetched.
    """
    buckets = _checked_buckets(batch_size, buckets)
    process_index, process_count = _process_slot(process_index, process_count)
    items, self.stats = tokenize_prompts(
        examples, task, tokenizer, buckets[-1], overlong)
    ds = _shard(items, process_index, process_count, num_epochs,
                drop_remainder)
    self.shard_size = len(ds)
    if shuffle:
      ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    ds = ds.batch(
        batch_size, drop_remainder=drop_remainder,
        batch_fn=lambda rows: collate(rows, batch_size, buckets,
                                      tokenizer.pad_id))
    self.dataset = ds.to_iter_dataset(
        read_options or grain.ReadOptions(num_threads=2,
                                          prefetch_buffer_size=16))

  def __iter__(self) -> grain.DatasetIterator:
    return iter(self.dataset)
