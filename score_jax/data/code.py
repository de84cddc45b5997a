"""MBPP and HumanEval: loaders, standard splits, prompts, and code tasks.

SCoRe trains on MBPP and evaluates on HumanEval. MBPP's standard split by
task_id: 1-10 few-shot prompts, 11-510 test, 511-600 validation, 601-974
train; its standard 3-shot prompt uses task_ids 2, 3 and 4 (Austin et al.
2021). HumanEval is prompted zero-shot with its own `prompt`. Rewards run the
tests in score_jax.rewards.code's sandbox, in a process pool for batches.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pathlib
import re
from typing import Sequence

import numpy as np

from score_jax.data import records
from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib

CODE_CORRECTION_INSTRUCTION = (
    'There might be an error in the code above because of lack of '
    'understanding of the question. Please correct the error, if any, and '
    'rewrite the solution. Only output the final correct Python program!')
# The MBPP paper's prompt, up to where the solution goes; a few-shot example
# continues with its code and MBPP_SHOT_END.
MBPP_PROMPT_TEMPLATE = (
    'You are an expert Python programmer, and here is your task: {task} Your '
    'code should pass these tests:\n\n{asserts}\n[BEGIN]\n')
MBPP_SHOT_END = '\n[DONE]'
MBPP_FEW_SHOT_IDS = (2, 3, 4)
MBPP_SPLITS = {'prompt': (1, 10), 'test': (11, 510), 'validation': (511, 600),
               'train': (601, 974)}
_FENCE_RE = re.compile(r'```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)',
                       re.DOTALL)


@dataclasses.dataclass(frozen=True)
class MBPPExample:
  """One MBPP problem; `index` is its position in the loaded list."""
  index: int
  task_id: int
  text: str
  code: str
  test_list: tuple[str, ...]
  test_setup_code: str = ''
  challenge_test_list: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class HumanEvalExample:
  """One HumanEval problem; `index` is its position in the loaded list."""
  index: int
  task_id: str
  prompt: str
  entry_point: str
  canonical_solution: str
  test: str


def load_mbpp(path: str | os.PathLike[str],
              split: str | None = None) -> list[MBPPExample]:
  """Loads mbpp.jsonl, optionally keeping one standard split.

  Args:
    path: the JSONL file (fields text, code, task_id, test_list and optionally
      test_setup_code, challenge_test_list).
    split: None for all, or one of 'prompt', 'test', 'validation', 'train'.

  Raises:
    ValueError: naming file and line of a malformed record, or a bad split.
  """
  if split is not None and split not in MBPP_SPLITS:
    raise ValueError(f'MBPP split {split!r}; expected one of '
                     f'{", ".join(MBPP_SPLITS)}')
  lo, hi = MBPP_SPLITS.get(split, (float('-inf'), float('inf')))
  examples = []
  for where, record in records.read_jsonl(path):
    task_id = records.get_field(record, 'task_id', int, where)
    if not lo <= task_id <= hi:
      continue
    examples.append(MBPPExample(
        index=len(examples), task_id=task_id,
        text=records.get_field(record, 'text', str, where),
        code=records.get_field(record, 'code', str, where),
        test_list=records.get_str_list(record, 'test_list', where),
        test_setup_code=records.get_field(record, 'test_setup_code', str,
                                          where, default=''),
        challenge_test_list=records.get_str_list(
            record, 'challenge_test_list', where, default=())))
  return examples


def load_humaneval(path: str | os.PathLike[str]) -> list[HumanEvalExample]:
  """Loads HumanEval.jsonl(.gz).

  Fields: task_id, prompt, entry_point, canonical_solution, test.
  """
  examples = []
  for where, record in records.read_jsonl(path):
    fields = {name: records.get_field(record, name, str, where)
              for name in ('task_id', 'prompt', 'entry_point',
                           'canonical_solution', 'test')}
    examples.append(HumanEvalExample(index=len(examples), **fields))
  return examples


def extract_program(text: str) -> str | None:
  """The program in a response, or None when it is empty.

  Takes the first ```python fenced block if there is one; otherwise the text
  up to `[DONE]`, without a leading `[BEGIN]`. A trailing `<end_of_turn>` is
  removed. Leading indentation is kept (a HumanEval completion starts inside
  the function body).
  """
  text = text.split(tokenizer_lib.END_OF_TURN)[0]
  fenced = _FENCE_RE.search(text)
  if fenced:
    text = fenced.group(1)
  else:
    text = text.split('[DONE]')[0]
    stripped = text.lstrip()
    if stripped.startswith('[BEGIN]'):
      text = stripped[len('[BEGIN]'):]
  text = text.lstrip('\n').rstrip()
  return text or None


def _code_rewards():
  """score_jax.rewards.code, imported on first use (it drives sandboxes)."""
  return importlib.import_module('score_jax.rewards.code')


def _normalise_newlines(code: str) -> str:
  return code.replace('\r\n', '\n')


@dataclasses.dataclass(frozen=True)
class _CodeTask(tasks.Task):
  """What MBPP and HumanEval share: instruction, extraction, pooled rewards.

  Attributes:
    timeout_s: wall-clock limit for one program's tests.
    num_workers: sandboxes run at once by `rewards` (<= free cores).
  """
  correction_instruction: str = CODE_CORRECTION_INSTRUCTION
  timeout_s: float = 10.0
  num_workers: int = 2

  def extract_answer(self, text: str) -> str | None:
    return extract_program(text)

  def check_program(self, example, response: str) -> tuple[str, str]:
    """(program, tests) to run for `response`; subclasses define it."""
    raise NotImplementedError

  def reward(self, example, response: str) -> float:
    code_rewards = _code_rewards()
    program, tests = self.check_program(example, response)
    return float(code_rewards.run_tests(program, tests, self.timeout_s).passed)

  def rewards(self, examples: Sequence, responses: Sequence[str]) -> np.ndarray:
    code_rewards = _code_rewards()
    tasks.check_same_length(examples, responses)
    programs, tests_list = zip(*(self.check_program(e, r)
                                 for e, r in zip(examples, responses)))
    results = code_rewards.run_tests_batch(
        list(programs), list(tests_list), self.timeout_s, self.num_workers)
    return np.array([r.passed for r in results], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class MBPPTask(_CodeTask):
  """MBPP with the standard 3-shot prompt.

  Attributes:
    data_dir: the directory holding mbpp/mbpp.jsonl.
    few_shot_ids: task_ids of the prompt's solved examples (standard: 2,3,4).
    prompt_template: formats {task} and {asserts} up to the solution.
    shot_end: closes a few-shot example's code.
    shot_separator: between consecutive examples (our choice).
  """
  data_dir: str = ''
  name: str = 'mbpp'
  few_shot_ids: tuple[int, ...] = MBPP_FEW_SHOT_IDS
  prompt_template: str = MBPP_PROMPT_TEMPLATE
  shot_end: str = MBPP_SHOT_END
  shot_separator: str = '\n'

  def _path(self) -> pathlib.Path:
    if not self.data_dir:
      raise ValueError("MBPPTask field 'data_dir' is empty; expected the "
                       'directory holding mbpp/mbpp.jsonl')
    return pathlib.Path(self.data_dir) / 'mbpp' / 'mbpp.jsonl'

  def load_examples(self, split: str) -> list[MBPPExample]:
    """One of MBPP's standard splits ('train', 'test', 'validation', ...)."""
    return load_mbpp(self._path(), split)

  @functools.cached_property
  def few_shot_prefix(self) -> str:
    """The solved examples that precede every problem in the prompt."""
    if not self.few_shot_ids:
      return ''
    by_id = {e.task_id: e for e in load_mbpp(self._path())}
    missing = [i for i in self.few_shot_ids if i not in by_id]
    if missing:
      raise ValueError(f'{self._path()}: few_shot_ids {missing} not found')
    shots = [self._format(by_id[i]) + _normalise_newlines(by_id[i].code) +
             self.shot_end for i in self.few_shot_ids]
    return self.shot_separator.join(shots) + self.shot_separator

  def _format(self, example: MBPPExample) -> str:
    return self.prompt_template.format(task=example.text,
                                       asserts='\n'.join(example.test_list))

  def first_turn_prompt(self, example: MBPPExample) -> str:
    return self.few_shot_prefix + self._format(example)

  def check_program(self, example: MBPPExample,
                    response: str) -> tuple[str, str]:
    code_rewards = _code_rewards()
    return (self.extract_answer(response) or '',
            code_rewards.mbpp_tests(dataclasses.asdict(example)))


@dataclasses.dataclass(frozen=True)
class HumanEvalTask(_CodeTask):
  """HumanEval, zero-shot: the first-turn prompt is the problem's own prompt.

  A response that defines the entry point is run after the prompt (so the
  prompt's imports and helpers exist); otherwise it is taken as the function
  body and appended to the prompt (our choice).

  Attributes:
    data_dir: the directory holding humaneval/HumanEval.jsonl.gz.
  """
  data_dir: str = ''
  name: str = 'humaneval'

  def load_examples(self, split: str) -> list[HumanEvalExample]:
    if split != 'test':
      raise ValueError(f"HumanEval split {split!r}; expected 'test' (the only "
                       'split)')
    if not self.data_dir:
      raise ValueError("HumanEvalTask field 'data_dir' is empty; expected the "
                       'directory holding humaneval/HumanEval.jsonl.gz')
    return load_humaneval(
        pathlib.Path(self.data_dir) / 'humaneval' / 'HumanEval.jsonl.gz')

  def first_turn_prompt(self, example: HumanEvalExample) -> str:
    return example.prompt

  def completion(self, example: HumanEvalExample, response: str) -> str:
    """What follows the prompt in the program run for `response`."""
    code = self.extract_answer(response) or ''
    if re.search(rf'^def\s+{re.escape(example.entry_point)}\s*\(', code,
                 re.MULTILINE):
      return '\n' + code  # Redefines the prompt's (docstring-only) function.
    return code

  def check_program(self, example: HumanEvalExample,
                    response: str) -> tuple[str, str]:
    code_rewards = _code_rewards()
    problem = dataclasses.asdict(example)
    return (code_rewards.humaneval_program(
        problem, self.completion(example, response)),
            code_rewards.humaneval_tests(problem))
