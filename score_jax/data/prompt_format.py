"""Prompt formats: how a task's text becomes the token ids of a two-turn episode.

A task chooses its format with its `prompt_format` field:

- 'chat' (instruction-tuned models): Gemma's chat layout. The prompt is
  `[bos]<start_of_turn>user\\n{question}<end_of_turn>\\n<start_of_turn>model\\n`, the
  correction chunk closes y1 with `<end_of_turn>` and opens a user turn holding the
  instruction, and a turn stops on `<end_of_turn>` or eos.
- 'fewshot' (base models, whose GGUF carries no chat template): plain text.
  The prompt is `[bos]` + k solved shots + the question, each shot being
  `{question_prefix}{question}{answer_prefix} {answer}{delimiter}`; the prompt
  ends with `{question_prefix}{question}{answer_prefix}`. The correction chunk
  is `{delimiter}{question_prefix}{instruction}{answer_prefix}`, the same plain
  style. A turn stops on any token whose text starts with the delimiter (Gemma
  has one token per run of newlines: '\\n', '\\n\\n', ...) or on eos, and a
  response is graded on its text before the first delimiter.

In both, the chunk's first token closes y1 and the sampler drops it where y1
already ended on it, so the trace, masks and packing are the sampler's own.
"""
from __future__ import annotations

import dataclasses
from score_jax.data import tasks
from score_jax.data.tokenizer import Tokenizer

FORMATS = ('chat', 'fewshot')


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """Gemma's chat layout (score_jax.data.tokenizer holds the strings)."""

  def prompt_ids(self, tok: Tokenizer, question: str) -> list[int]:
    return tok.chat_prompt_ids(question)

  def prompt_parts(self, tok: Tokenizer,
                   question: str) -> tuple[list[int], list[int], list[int]]:
    """(header, body, footer) ids; truncation shortens only the body."""
    return tok.chat_prompt_parts(question)

  def chunk_ids(self, tok: Tokenizer, instruction: str) -> list[int]:
    return tok.correction_chunk_ids(instruction)

  def turn_end_ids(self, tok: Tokenizer) -> list[int]:
    """What closes a turn written offline (SFT traces)."""
    return [tok.end_of_turn_id]

  def stop_ids(self, tok: Tokenizer) -> tuple[int, ...]:
    return (tok.eos_id, tok.end_of_turn_id)

  def response_text(self, text: str) -> str:
    return text


@dataclasses.dataclass(frozen=True)
class FewShotFormat:
  """Plain few-shot text for base models.

  Attributes:
    shots: solved (question, answer) pairs shown before every question.
    question_prefix: text before each question, e.g. 'Q: '.
    answer_prefix: text between a question and its answer, e.g. '\\nA:'; a
      space separates it from the answer in the shots.
    delimiter: ends an answer; the model's turns stop on it.
    shot_instruction: when set, every shot shows the whole episode: its answer,
      then the correction chunk with this instruction and the answer again (so a
      base model sees what the second turn is, but never a correction).
    shot_turns: with shot_instruction, the (first, second) answers each shot
      shows instead of (answer, answer), e.g. a wrong first answer corrected;
      one pair per shot, or () for the default.
  """
  shots: tuple[tuple[str, str], ...] = ()
  question_prefix: str = 'Q: '
  answer_prefix: str = '\nA:'
  delimiter: str = '\n'
  shot_instruction: str = ''
  shot_turns: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    object.__setattr__(self, 'shots', tuple((str(q), str(a)) for q, a in self.shots))
    object.__setattr__(self, 'shot_turns',
                       tuple((str(a1), str(a2)) for a1, a2 in self.shot_turns))
    if self.shot_turns and (len(self.shot_turns) != len(self.shots)
                            or not self.shot_instruction):
      raise ValueError(f'prompt format fewshot: shot_turns has {len(self.shot_turns)} '
                       f'pairs; expected one per shot ({len(self.shots)}) and a '
                       'shot_instruction for the second turn')
    if not self.delimiter:
      raise ValueError("prompt format 'fewshot': delimiter is empty; expected the text "
                       "that ends an answer (e.g. '\\n')")
    for a in [a for _, a in self.shots] + [a for pair in self.shot_turns for a in pair]:
      if self.delimiter in a:
        raise ValueError(f'prompt format fewshot: shot answer {a!r} contains the '
                         f'delimiter {self.delimiter!r}; expected one-line answers')

  def _shots_text(self) -> str:
    if not self.shot_instruction:
      return ''.join(f'{self._ask(q)} {a}{self.delimiter}' for q, a in self.shots)
    turns = self.shot_turns or tuple((a, a) for _, a in self.shots)
    fix = self._ask(self.shot_instruction)
    return ''.join(f'{self._ask(q)} {a1}{self.delimiter}{fix} {a2}{self.delimiter}'
                   for (q, _), (a1, a2) in zip(self.shots, turns))

  def prompt_ids(self, tok: Tokenizer, question: str) -> list[int]:
    return tok.encode(self._shots_text() + self._ask(question), add_bos=True)

  def prompt_parts(self, tok: Tokenizer,
                   question: str) -> tuple[list[int], list[int], list[int]]:
    """(bos + shots + question prefix, question, answer prefix), encoded separately."""
    return (tok.encode(self._shots_text() + self.question_prefix, add_bos=True),
            tok.encode(question), tok.encode(self.answer_prefix))

  def _ask(self, question: str) -> str:
    return f'{self.question_prefix}{question}{self.answer_prefix}'

  def chunk_ids(self, tok: Tokenizer, instruction: str) -> list[int]:
    return tok.encode(self.delimiter + self._ask(instruction))

  def turn_end_ids(self, tok: Tokenizer) -> list[int]:
    return tok.encode(self.delimiter)

  def stop_ids(self, tok: Tokenizer) -> tuple[int, ...]:
    return (tok.eos_id,) + tuple(tok.ids_starting_with(self.delimiter))

  def response_text(self, text: str) -> str:
    return text.split(self.delimiter, 1)[0]


PromptFormat = ChatFormat | FewShotFormat


def for_task(task: tasks.Task) -> PromptFormat:
  """The format named by `task.prompt_format` ('chat' when the task has none).

  'fewshot' asks the task for its shots and prefixes (`task.few_shot_format()`).

  Raises:
    ValueError: an unknown name, or 'fewshot' for a task that defines no shots.
  """
  name = getattr(task, 'prompt_format', 'chat')
  if name == 'chat':
    return ChatFormat()
  if name == 'fewshot':
    if not hasattr(task, 'few_shot_format'):
      raise ValueError(f"task {task.name!r}: field prompt_format='fewshot' but the task "
                       "defines no few-shot examples; expected prompt_format='chat'")
    return task.few_shot_format()
  raise ValueError(f'task {task.name!r}: field prompt_format={name!r}; expected one of '
                   f'{", ".join(FORMATS)}')

