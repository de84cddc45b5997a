"""MATH (Hendrycks et al. 2021): loader, the paper's splits, and MathTask.

SCoRe trains on MATH train plus the 4,500 test problems outside MATH500 (12,000
problems) and evaluates on MATH500, the PRM800K split. The reference answer of
a problem is its `answer` field (MATH500 has one), else what
score_jax.rewards.math.extract_answer finds in its solution (the content of the
LAST \\boxed{}), so references and responses are extracted alike.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import re
from typing import Iterator, Sequence

from absl import logging

from score_jax.data import records
from score_jax.data import tasks

MATH_FIRST_TURN_INSTRUCTION = (
    'You are a math expert. When you respond, respond only with the Solution '
    'of the final Problem, thinking step by step. At the end of the Solution, '
    'when you give your final answer, write it in the form "Final Answer: The '
    'final answer is $answer$. I hope it is correct."')
MATH_CORRECTION_INSTRUCTION = (
    'There might be an error in the solution above because of lack of '
    'understanding of the question. Please correct the error, if any, and '
    'rewrite the solution. Only output the final solution! At the end of the '
    'Solution, when you give your final answer, write it in the form "Final '
    'Answer: The final answer is $answer$. I hope it is correct."')
# How the instruction and the problem are joined is not published; our choice.
MATH_PROMPT_TEMPLATE = '{instruction}\n\nProblem:\n{problem}'
_BOX = re.compile(r'\\(?:boxed|fbox)(?![a-zA-Z])')


@dataclasses.dataclass(frozen=True)
class MathExample:
  """One MATH problem; `index` is its position in the loaded list."""
  index: int
  unique_id: str
  problem: str
  solution: str
  answer: str
  level: str = ''
  subject: str = ''


def _math_rewards():
  """score_jax.rewards.math (the sympy grader), imported on first use."""
  return importlib.import_module('score_jax.rewards.math')


def _example(where: str, record: dict, index: int,
             default_id: str) -> MathExample:
  solution = records.get_field(record, 'solution', str, where)
  answer = records.get_field(record, 'answer', str, where, default=None)
  if answer is None:
    answer = _math_rewards().extract_answer(solution)
  if answer is None:
    if not _BOX.search(solution):
      raise ValueError(f"{where}: field 'solution' has no \\boxed{{}} and "
                       "there is no 'answer' field; expected one of them")
    # MATH train/number_theory/7115 and 7117 box nothing ("\boxed{} primes").
    logging.warning('%s: empty \\boxed{} in the solution; the reference '
                    'answer is empty, so no response is rewarded', where)
    answer = ''
  level = records.get_field(record, 'level', (str, int), where, default='')
  return MathExample(
      index=index,
      unique_id=records.get_field(record, 'unique_id', str, where,
                                  default=default_id),
      problem=records.get_field(record, 'problem', str, where),
      solution=solution,
      answer=answer,
      level=str(level),
      subject=records.get_field(
          record, 'subject', str, where,
          default=records.get_field(record, 'type', str, where, default='')))


def _records(path: pathlib.Path) -> Iterator[tuple[str, dict, str]]:
  """(where, record, default unique_id) from a .jsonl, .json or directory."""
  if path.is_dir():  # The original release: <split>/<subject>/<n>.json.
    files = sorted(path.rglob('*.json'))
    if not files:
      raise FileNotFoundError(f'{path}: no *.json problem files found')
    for file in files:
      for where, record in records.read_json(file):
        yield where, record, str(file.relative_to(path.parent))
  elif path.suffix == '.json':
    for where, record in records.read_json(path):
      yield where, record, where
  else:
    for where, record in records.read_jsonl(path):
      yield where, record, f'{path.name}:{where.rsplit(":", 1)[1]}'


def load_math(path: str | os.PathLike[str]) -> list[MathExample]:
  """Loads MATH problems from a JSONL file, a JSON file or a directory.

  Args:
    path: a `.jsonl` (one problem per line: problem, solution and optionally
      unique_id, level, type/subject, answer), a `.json` array, or a directory
      of per-problem `.json` files as in the original release.

  Raises:
    ValueError: naming file and line of a malformed record.
  """
  return [_example(where, record, i, default_id)
          for i, (where, record, default_id)
          in enumerate(_records(pathlib.Path(path)))]


def split_by_ids(examples: Sequence[MathExample], unique_ids: set[str],
                 source: str) -> tuple[list[MathExample], list[MathExample]]:
  """(examples whose unique_id is in `unique_ids`, the others), reindexed.

  Raises:
    ValueError: some id of `unique_ids` (read from `source`) is not present.
  """
  present = {e.unique_id for e in examples}
  missing = sorted(unique_ids - present)
  if missing:
    raise ValueError(f'{source}: {len(missing)} unique_ids not found among '
                     f'the {len(examples)} problems, e.g. {missing[:3]}')
  inside = [e for e in examples if e.unique_id in unique_ids]
  outside = [e for e in examples if e.unique_id not in unique_ids]
  return tasks.reindex(inside), tasks.reindex(outside)


def load_paper_math_splits(
    data_dir: str | os.PathLike[str]
) -> tuple[list[MathExample], list[MathExample]]:
  """(train, eval) as in SCoRe: MATH train + test minus MATH500, and MATH500.

  Args:
    data_dir: a directory holding math/train.jsonl, math/test.jsonl and
      math/math500.jsonl (the layout of shared/data).

  Returns:
    train (7,500 + 4,500 = 12,000 problems) and MATH500 (500, read from
    math500.jsonl with its `answer` field, after checking every id is a MATH
    test problem).
  """
  math_dir = pathlib.Path(data_dir) / 'math'
  math500 = load_math(math_dir / 'math500.jsonl')
  test = load_math(math_dir / 'test.jsonl')
  _, test_rest = split_by_ids(test, {e.unique_id for e in math500},
                              str(math_dir / 'math500.jsonl'))
  return tasks.reindex(load_math(math_dir / 'train.jsonl') + test_rest), math500


@dataclasses.dataclass(frozen=True)
class MathTask(tasks.Task):
  """MATH with the paper's prompts; the reward is score_jax.rewards.math's.

  Attributes:
    data_dir: the directory with math/{train,test,math500}.jsonl.
    instruction: the first-turn instruction (the paper's by default).
    prompt_template: joins `instruction` and `problem` (our choice).
    correction_instruction: the paper's MATH self-correction instruction.
  """
  data_dir: str = ''
  name: str = 'math'
  instruction: str = MATH_FIRST_TURN_INSTRUCTION
  prompt_template: str = MATH_PROMPT_TEMPLATE
  correction_instruction: str = MATH_CORRECTION_INSTRUCTION

  def load_examples(self, split: str) -> list[MathExample]:
    """'train' (12,000) or 'test' (MATH500) from `data_dir`."""
    if split not in ('train', 'test'):
      raise ValueError(f"MathTask split {split!r}; expected 'train' or 'test'")
    if not self.data_dir:
      raise ValueError("MathTask field 'data_dir' is empty; expected the "
                       'directory holding math/*.jsonl')
    train, test = load_paper_math_splits(self.data_dir)
    return train if split == 'train' else test

  def first_turn_prompt(self, example: MathExample) -> str:
    return self.prompt_template.format(instruction=self.instruction,
                                       problem=example.problem)

  def extract_answer(self, text: str) -> str | None:
    return _math_rewards().extract_answer(text)

  def reward(self, example: MathExample, response: str) -> float:
    return float(_math_rewards().math_reward(response, example.answer))
