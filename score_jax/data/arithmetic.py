"""Integer arithmetic with difficulty knobs, for pretrained base models (few-shot).

A problem is an expression of `num_operands` non-negative integers joined by
operators drawn from `operators` ('+', '-', '*'), e.g. `7 * 8 - 23`. Few-shot,
it is asked the way the issue measured Gemma 3 270M: solved lines `3 + 4 = 7`,
then `7 * 8 - 23 =`; the correction chunk is the plain line
`The last answer may be wrong. Corrected answer =`.
Its answer is the exact integer under the usual precedence (* before + and -,
otherwise left to right); it may be negative. `digits` sets each operand's
width: one int for all, or one per operand (e.g. (2, 1): a two-digit and a
one-digit number). The knobs move a small model between hopeless and solved;
docs/gemma3-270m-calibration.md records where Gemma 3 270M lands.

A response is right when its text (before the format's delimiter), stripped of
whitespace and of one trailing '.', is exactly the answer's integer.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from score_jax.data import prompt_format
from score_jax.data import tasks

OPERATORS = '+-*'
DEFAULT_CORRECTION_INSTRUCTION = 'The last answer may be wrong. Corrected answer'
_INT_RE = re.compile(r'-?[0-9]+')


@dataclasses.dataclass(frozen=True)
class ExpressionExample:
  """`expression` (e.g. '7 * 8 - 23') and its exact integer `answer` (e.g. '33')."""
  index: int
  operands: tuple[int, ...]
  ops: tuple[str, ...]
  expression: str
  answer: str


def evaluate(operands: tuple[int, ...], ops: tuple[str, ...]) -> int:
  """The value under the usual precedence: products first, then + and - left to right."""
  terms, signs = [operands[0]], []
  for op, x in zip(ops, operands[1:]):
    if op == '*':
      terms[-1] *= x
    else:
      signs.append(op)
      terms.append(x)
  value = terms[0]
  for sign, term in zip(signs, terms[1:]):
    value = value + term if sign == '+' else value - term
  return value


def make_example(index: int, operands, ops) -> ExpressionExample:
  operands, ops = tuple(int(x) for x in operands), tuple(ops)
  text = str(operands[0]) + ''.join(f' {op} {x}' for op, x in zip(ops, operands[1:]))
  return ExpressionExample(index=index, operands=operands, ops=ops, expression=text,
                           answer=str(evaluate(operands, ops)))


def _digit_widths(digits, num_operands: int) -> tuple[int, ...]:
  widths = (digits,) * num_operands if isinstance(digits, int) else tuple(digits)
  if len(widths) != num_operands or any(int(d) < 1 for d in widths):
    raise ValueError(f"arithmetic field 'digits' is {digits!r}; expected an int >= 1 or "
                     f'{num_operands} of them (one per operand)')
  return tuple(int(d) for d in widths)


def expression_splits(seed: int, num_operands: int, digits, operators: str,
                      num_train: int, num_test: int
                      ) -> tuple[list[ExpressionExample], list[ExpressionExample]]:
  """(train, test) distinct expressions drawn from `seed`; test first, so it does
  not depend on num_train. Operands of width d are drawn from [10^(d-1), 10^d)
  (0..9 for d = 1).

  Raises:
    ValueError: a knob out of range, or fewer distinct expressions than asked for.
  """
  if num_operands < 2:
    raise ValueError(f"arithmetic field 'num_operands' is {num_operands}; expected >= 2")
  if not operators or set(operators) - set(OPERATORS):
    raise ValueError(f"arithmetic field 'operators' is {operators!r}; expected a "
                     f'non-empty subset of {OPERATORS!r}')
  widths = _digit_widths(digits, num_operands)
  low = np.array([0 if d == 1 else 10**(d - 1) for d in widths])
  high = np.array([10**d for d in widths])
  ops = sorted(set(operators))
  available = int(np.prod(high - low)) * len(ops)**(num_operands - 1)
  if num_train + num_test > available:
    raise ValueError(f'arithmetic: num_train + num_test = {num_train + num_test} but '
                     f'only {available} distinct expressions exist for these knobs')
  rng = np.random.default_rng(seed)
  seen, problems = set(), []
  while len(problems) < num_train + num_test:
    operands = rng.integers(low, high)
    chosen = tuple(ops[i] for i in rng.integers(0, len(ops), num_operands - 1))
    key = (tuple(operands.tolist()), chosen)
    if key not in seen:
      seen.add(key)
      problems.append(key)
  test = [make_example(i, *p) for i, p in enumerate(problems[:num_test])]
  train = [make_example(i, *p) for i, p in enumerate(problems[num_test:])]
  return train, test


@dataclasses.dataclass(frozen=True)
class ArithmeticTask(tasks.Task):
  """Exact-answer integer arithmetic; few-shot prompts by default.

  Attributes:
    num_operands: numbers per expression (>= 2).
    digits: operand width, one int or one per operand.
    operators: the operators drawn from, a subset of '+-*'.
    seed: draws the problems and the shots.
    num_train / num_test: problems per split (disjoint).
    num_shots: solved examples in a few-shot prompt (the first training problems;
      training then starts after them).
    prompt_format: 'fewshot' (base models) or 'chat'.
    shots_show_second_turn: few-shot shots also show the correction line with
      the answer repeated (see prompt_format.FewShotFormat.shot_instruction).
    shots_change_answer: of those shots, how many change the answer in the
      second turn, alternately a wrong first answer corrected and a right one
      made wrong (wrong = right +- 1..9): the base model sees that the second
      turn may change an answer, but no net gain from it.
  """
  name: str = 'arithmetic'
  num_operands: int = 2
  digits: int | tuple[int, ...] = 1
  operators: str = '+'
  seed: int = 0
  num_train: int = 20_000
  num_test: int = 1_000
  num_shots: int = 4
  prompt_format: str = 'fewshot'
  shots_show_second_turn: bool = False
  shots_change_answer: int = 0
  correction_instruction: str = DEFAULT_CORRECTION_INSTRUCTION

  def _splits(self):
    train, test = expression_splits(self.seed, self.num_operands, self.digits,
                                    self.operators, self.num_train + self.num_shots,
                                    self.num_test)
    return train[:self.num_shots], train[self.num_shots:], test

  def load_examples(self, split: str) -> list[ExpressionExample]:
    if split not in ('train', 'test'):
      raise ValueError(f"arithmetic split {split!r}; expected 'train' or 'test'")
    _, train, test = self._splits()
    if split == 'test':
      return test
    return [dataclasses.replace(e, index=i) for i, e in enumerate(train)]

  def first_turn_prompt(self, example: ExpressionExample) -> str:
    return example.expression

  def few_shot_format(self) -> prompt_format.FewShotFormat:
    """Lines `{expression} = {answer}`, then `{expression} =`."""
    shots, _, _ = self._splits()
    k = self.shots_change_answer
    if not 0 <= k <= len(shots) or (k and not self.shots_show_second_turn):
      raise ValueError(f'task arithmetic: field shots_change_answer={k}; expected 0..'
                       f'{len(shots)} (num_shots), with shots_show_second_turn=True')
    return prompt_format.FewShotFormat(
        shots=tuple((e.expression, e.answer) for e in shots), question_prefix='',
        answer_prefix=' =',
        shot_instruction=self.correction_instruction if self.shots_show_second_turn else '',
        shot_turns=self._shot_turns(shots) if k else ())

  def _shot_turns(self, shots) -> tuple[tuple[str, str], ...]:
    """(first, second) answers: the first shots_change_answer shots change it."""
    rng = np.random.default_rng(self.seed)
    turns = []
    for i, e in enumerate(shots):
      wrong = str(int(e.answer) + int(rng.choice([-1, 1]) * rng.integers(1, 10)))
      if i >= self.shots_change_answer:
        turns.append((e.answer, e.answer))
      else:
        turns.append((wrong, e.answer) if i % 2 == 0 else (e.answer, wrong))
    return tuple(turns)

  def extract_answer(self, text: str) -> str | None:
    """The integer the response states, or None when it is anything else."""
    text = text.strip()
    text = text[:-1].strip() if text.endswith('.') else text
    return str(int(text)) if _INT_RE.fullmatch(text) else None

  def reward(self, example: ExpressionExample, response: str) -> float:
    return float(self.extract_answer(response) == example.answer)
