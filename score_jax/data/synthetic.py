"""Synthetic n-digit addition: the embedded demo's task, splits and base_sft data.

A problem is `aaa+bbb=` with both operands zero-padded to `digits` digits; the
answer is the sum zero-padded to `digits + 1` digits (`123+456=` -> `0579`),
so every prompt and every answer has a fixed token length. A response is right
when, stripped of surrounding whitespace and of one trailing `<end_of_turn>`,
it is exactly the answer's digits: no extra text, no missing zero.

See shared/design/tiny-demo-study.md for why base_sft corrupts half of the
first attempts.
"""
from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple, Sequence

import numpy as np

from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib

DEFAULT_CORRECTION_INSTRUCTION = 'Check and correct.'


@dataclasses.dataclass(frozen=True)
class ArithmeticExample:
  """`question` (e.g. '123+456=') and its exact `answer` (e.g. '0579')."""
  index: int
  a: int
  b: int
  question: str
  answer: str


def make_example(index: int, a: int, b: int, digits: int) -> ArithmeticExample:
  return ArithmeticExample(index=index, a=a, b=b,
                           question=f'{a:0{digits}d}+{b:0{digits}d}=',
                           answer=f'{a + b:0{digits + 1}d}')


def arithmetic_splits(
    seed: int, digits: int = 3, num_train: int = 20_000, num_test: int = 2_000
) -> tuple[list[ArithmeticExample], list[ArithmeticExample]]:
  """(train, test) problems drawn from `seed`, disjoint even up to a+b = b+a.

  The first `num_test` distinct problems drawn become the test set and the
  next `num_train` the training set, so the test set does not depend on
  `num_train`.

  Raises:
    ValueError: fewer distinct problems exist than were asked for.
  """
  if digits < 1:
    raise ValueError(f"synthetic field 'digits' is {digits}; expected >= 1")
  n = 10**digits
  available = n * (n + 1) // 2  # Unordered pairs.
  if num_train + num_test > available:
    raise ValueError(
        f'synthetic: num_train + num_test = {num_train + num_test} but only '
        f'{available} distinct {digits}-digit additions exist')
  rng = np.random.default_rng(seed)
  seen, pairs = set(), []
  while len(pairs) < num_train + num_test:
    for a, b in rng.integers(0, n, size=(num_train + num_test, 2)).tolist():
      key = (min(a, b), max(a, b))
      if key not in seen:
        seen.add(key)
        pairs.append((a, b))
        if len(pairs) == num_train + num_test:
          break
  test = [make_example(i, a, b, digits)
          for i, (a, b) in enumerate(pairs[:num_test])]
  train = [make_example(i, a, b, digits)
           for i, (a, b) in enumerate(pairs[num_test:])]
  return train, test


class BaseSftExample(NamedTuple):
  """Text pieces of one supervised base_sft example.

  `y2` is None for a single-attempt example (prompt -> y1). For a two-attempt
  example y1 may be wrong (`y1_correct` False) and y2 is always right; the
  study put no loss on such y1, which is the trainer's choice to make.
  """
  prompt: str
  y1: str
  y2: str | None
  y1_correct: bool


def corrupt_digits(answer: str, rng: np.random.Generator,
                   max_digits: int = 2) -> str:
  """`answer` with 1..max_digits distinct positions set to a different digit."""
  count = int(rng.integers(1, min(max_digits, len(answer)) + 1))
  chars = list(answer)
  for pos in rng.choice(len(chars), size=count, replace=False).tolist():
    other = int(rng.integers(0, 9))  # One of the 9 other digits.
    chars[pos] = str(other if other < int(chars[pos]) else other + 1)
  return ''.join(chars)


def base_sft_examples(
    examples: Sequence[ArithmeticExample], seed: int,
    corrupt_fraction: float = 0.5, max_corrupted_digits: int = 2
) -> tuple[list[BaseSftExample], list[BaseSftExample]]:
  """(single-attempt, two-attempt) base_sft examples, one of each per problem.

  In the two-attempt ones, a `corrupt_fraction` of the y1 (chosen at random)
  have 1..`max_corrupted_digits` digits changed and y2 is the right answer.
  This is supervised training on synthetic corrections: say so wherever
  results after it are shown.
  """
  rng = np.random.default_rng(seed)
  single = [BaseSftExample(e.question, e.answer, None, True) for e in examples]
  double = []
  for e in examples:
    if rng.random() < corrupt_fraction:
      y1 = corrupt_digits(e.answer, rng, max_corrupted_digits)
      double.append(BaseSftExample(e.question, y1, e.answer, False))
    else:
      double.append(BaseSftExample(e.question, e.answer, e.answer, True))
  return single, double


_DIGITS_RE = re.compile(r'[0-9]+')  # An answer: ASCII digits only.


@dataclasses.dataclass(frozen=True)
class SyntheticArithmeticTask(tasks.Task):
  """n-digit addition with an exact-match reward.

  Attributes:
    digits: operand width (the study: 3; a 5-digit variant failed).
    seed: draws the train/test problems.
    num_train: training problems.
    num_test: held-out problems, disjoint from training.
    correction_instruction: short, since a tiny model pays per token (ours).
  """
  name: str = 'synthetic_arithmetic'
  digits: int = 3
  seed: int = 0
  num_train: int = 20_000
  num_test: int = 2_000
  correction_instruction: str = DEFAULT_CORRECTION_INSTRUCTION

  def load_examples(self, split: str) -> list[ArithmeticExample]:
    if split not in ('train', 'test'):
      raise ValueError(f"synthetic split {split!r}; expected 'train' or "
                       "'test'")
    train, test = arithmetic_splits(self.seed, self.digits, self.num_train,
                                    self.num_test)
    return train if split == 'train' else test

  def first_turn_prompt(self, example: ArithmeticExample) -> str:
    return example.question

  def extract_answer(self, text: str) -> str | None:
    """The stripped response if it is all digits, else None."""
    text = tokenizer_lib.strip_turn_end(text)
    return text if _DIGITS_RE.fullmatch(text) else None

  def reward(self, example: ArithmeticExample, response: str) -> float:
    return float(self.extract_answer(response) == example.answer)

  def tokenizer_corpus(self, num_examples: int = 2_000) -> list[str]:
    """Two-turn chat transcripts to train the demo's tokenizer on.

    Holds every digit, '+', '=', the chat markers, 'user', 'model' and the
    correction instruction, so each becomes a piece.
    """
    train = self.load_examples('train')[:num_examples]
    sot, eot = tokenizer_lib.START_OF_TURN, tokenizer_lib.END_OF_TURN
    corpus = ['0123456789']
    for e in train:
      corpus.append(
          f'{sot}user\n{e.question}{eot}\n{sot}model\n{e.answer}{eot}\n'
          f'{sot}user\n{self.correction_instruction}{eot}\n'
          f'{sot}model\n{e.answer}{eot}\n')
    return corpus
