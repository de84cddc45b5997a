"""A task made from plain callables: problems, a prompt function, a reward function.

  task = FunctionTask(problems=[{'n': 3}, {'n': 5}],
                      prompt_fn=lambda p: f'Say a digit above {p["n"]}:',
                      reward_fn=lambda p, text: float(text[:1] > str(p['n'])))

The reward function sees the user's own problem (a dict, a string, anything)
and the decoded completion, with Gemma's closing `<end_of_turn>` removed. It is
the whole `Task` interface the SCoRe loop needs, so a FunctionTask trains,
evaluates and resumes exactly as the built-in tasks do.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.data.math import MATH_CORRECTION_INSTRUCTION

# The paper's instruction p (SCoRe, MATH); a short one suits a tiny model better.
PAPER_CORRECTION_INSTRUCTION = MATH_CORRECTION_INSTRUCTION


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem of a FunctionTask: its position in its split and the user's value."""
  index: int
  value: Any


@dataclasses.dataclass(frozen=True)
class FunctionTask(tasks.Task):
  """A Task whose prompt and reward are user functions of the user's own problems.

  Attributes:
    problems: the training problems (dicts, strings, any value prompt_fn reads).
    prompt_fn: problem -> the first-turn question.
    reward_fn: (problem, completion text) -> reward, 1.0 for a right answer.
    correction_instruction: the self-correction instruction p (the paper's).
    test_problems: held-out problems; None evaluates on `problems`.
    answer_fn: completion text -> the answer in it (for majority votes and
      scorers); None takes the whole completion.
    name: shown in logs and checkpoints' config fingerprint.
    prompt_format: 'chat' (Gemma's chat layout) or 'fewshot'.
  """
  problems: Sequence[Any] = ()
  prompt_fn: Callable[[Any], str] | None = None
  reward_fn: Callable[[Any, str], float] | None = None
  correction_instruction: str = PAPER_CORRECTION_INSTRUCTION
  test_problems: Sequence[Any] | None = None
  answer_fn: Callable[[str], str | None] | None = None
  name: str = 'function_task'
  prompt_format: str = 'chat'

  def __post_init__(self):
    if not callable(self.prompt_fn) or not callable(self.reward_fn):
      raise ValueError('FunctionTask: prompt_fn and reward_fn must be callables, got '
                       f'{type(self.prompt_fn).__name__} and {type(self.reward_fn).__name__}')
    if isinstance(self.problems, (str, bytes)) or not len(self.problems):
      raise ValueError('FunctionTask: problems must be a non-empty list (of dicts or '
                       f'strings), got {self.problems!r:.60}')

  def load_examples(self, split: str) -> list[Problem]:
    if split not in ('train', 'test'):
      raise ValueError(f"FunctionTask split {split!r}; expected 'train' or 'test'")
    values = self.problems if split == 'train' or self.test_problems is None \
        else self.test_problems
    return [Problem(i, v) for i, v in enumerate(values)]

  def first_turn_prompt(self, example: Problem) -> str:
    return self.prompt_fn(example.value)

  def extract_answer(self, text: str) -> str | None:
    text = tokenizer_lib.strip_turn_end(text)
    return self.answer_fn(text) if self.answer_fn is not None else text

  def reward(self, example: Problem, response: str) -> float:
    return float(self.reward_fn(example.value, tokenizer_lib.strip_turn_end(response)))

  def tokenizer_corpus(self) -> list[str]:
    """Chat transcripts of every problem, for a tokenizer trained from scratch.

    Holds each prompt, the correction instruction, the chat markers, the digits
    and the text of each problem's values (answers are usually among them).
    """
    sot, eot = tokenizer_lib.START_OF_TURN, tokenizer_lib.END_OF_TURN
    corpus = ['0123456789']
    for p in list(self.problems) + list(self.test_problems or ()):
      values = p.values() if isinstance(p, dict) else [p]
      text = ' '.join(str(v) for v in values)
      corpus.append(f'{sot}user\n{self.prompt_fn(p)}{eot}\n{sot}model\n{text}{eot}\n'
                    f'{sot}user\n{self.correction_instruction}{eot}\n'
                    f'{sot}model\n{text}{eot}\n')
    return corpus
