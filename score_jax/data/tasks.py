"""The Task interface: prompt format, correction instruction and reward.

A task is everything about a problem domain that the SCoRe loop needs besides
the model: how to turn an example into a first-turn prompt, the fixed
self-correction instruction p appended after y1, and the binary reward
r(y, y*). Concrete tasks live in score_jax.data.{math,code,synthetic}; make one
by name with `make_task('math', data_dir=...)`.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from typing import Any, Sequence

import numpy as np

# name -> (module, class); imported lazily so `tasks` has no heavy imports.
_REGISTRY = {
    'arithmetic': ('score_jax.data.arithmetic', 'ArithmeticTask'),
    'math': ('score_jax.data.math', 'MathTask'),
    'mbpp': ('score_jax.data.code', 'MBPPTask'),
    'humaneval': ('score_jax.data.code', 'HumanEvalTask'),
    'synthetic_arithmetic': ('score_jax.data.synthetic',
                             'SyntheticArithmeticTask'),
}


class Task(abc.ABC):
  """A problem domain for two-attempt self-correction.

  Subclasses are frozen dataclasses whose fields (prompts, instruction, split
  sizes, worker counts) default to the paper's settings and can be overridden
  from a config. Examples are frozen dataclasses with an `index` field: the
  position of the example in the list `load_examples` returned.
  """

  name: str
  correction_instruction: str
  # 'chat' (Gemma's chat layout) or 'fewshot' (plain text for base models; the
  # task then defines few_shot_format()). See score_jax.data.prompt_format.
  prompt_format: str = 'chat'

  @abc.abstractmethod
  def load_examples(self, split: str) -> list[Any]:
    """The examples of `split` (e.g. 'train', 'test'), indexed 0..n-1."""

  @abc.abstractmethod
  def first_turn_prompt(self, example: Any) -> str:
    """The question of the first turn (before the prompt format is applied)."""

  @abc.abstractmethod
  def extract_answer(self, text: str) -> str | None:
    """The answer (or program) in a model response; None when there is none."""

  @abc.abstractmethod
  def reward(self, example: Any, response: str) -> float:
    """1.0 when `response` solves `example`, else 0.0."""

  def rewards(self, examples: Sequence[Any],
              responses: Sequence[str]) -> np.ndarray:
    """Rewards of a batch, float32[len(examples)]; may run in parallel."""
    check_same_length(examples, responses)
    return np.array([self.reward(e, r) for e, r in zip(examples, responses)],
                    dtype=np.float32)


def check_same_length(examples: Sequence[Any], responses: Sequence[str]):
  """Raises ValueError unless there is one response per example."""
  if len(examples) != len(responses):
    raise ValueError(f'rewards: got {len(examples)} examples but '
                     f'{len(responses)} responses; expected one per example')


def reindex(examples: Sequence[Any]) -> list[Any]:
  """`examples` with each `index` set to its position (dataclasses.replace).

  Pipelines carry `index` and the host looks examples up by it, so a filtered,
  concatenated or user-given list must be reindexed first.
  """
  if all(getattr(e, 'index', i) == i for i, e in enumerate(examples)):
    return list(examples)
  return [dataclasses.replace(e, index=i) for i, e in enumerate(examples)]


def task_names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def make_task(name: str, **fields: Any) -> Task:
  """Builds the task called `name`, overriding its default fields.

  Args:
    name: one of `task_names()`.
    **fields: dataclass fields of that task (e.g. data_dir, digits).

  Raises:
    ValueError: unknown task name.
  """
  if name not in _REGISTRY:
    raise ValueError(f"task name {name!r} unknown; expected one of "
                     f'{", ".join(task_names())}')
  module_name, class_name = _REGISTRY[name]
  cls = getattr(importlib.import_module(module_name), class_name)
  return cls(**fields)
