"""SentencePiece tokenizer with Gemma's chat turn layout, and a tiny trainer.

Gemma's tokenizer is a SentencePiece model whose `<start_of_turn>` and
`<end_of_turn>` pieces are user-defined symbols, so encoding the chat layout as
one string yields them as single ids. The trainer builds a small model with the
same special-id layout (pad=0, eos=1, bos=2, unk=3) for the embedded demo.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Iterable, Sequence

import sentencepiece as spm

START_OF_TURN = '<start_of_turn>'
END_OF_TURN = '<end_of_turn>'

# Gemma chat layout (https://ai.google.dev/gemma/docs/formatting).
_USER_HEADER = f'{START_OF_TURN}user\n'
_MODEL_HEADER = f'{START_OF_TURN}model\n'
_TURN_FOOTER = f'{END_OF_TURN}\n'


def strip_turn_end(text: str) -> str:
  """`text` without surrounding whitespace and one trailing `<end_of_turn>`."""
  text = text.strip()
  if text.endswith(END_OF_TURN):
    text = text[:-len(END_OF_TURN)].strip()
  return text


class Tokenizer:
  """A SentencePiece model plus the ids and chat helpers the trainer needs.

  Attributes:
    source: where the model came from (a path, or '<bytes>'); named in errors.
    vocab_size: the number of pieces.
    pad_id, bos_id, eos_id, unk_id: the model's special ids (-1: none).
    start_of_turn_id, end_of_turn_id: the chat turn markers' ids.
  """

  def __init__(self, model: str | os.PathLike[str] | bytes):
    """Loads a SentencePiece model.

    Args:
      model: a path to a `.model` file, or the serialized ModelProto bytes.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the model cannot be parsed, or lacks Gemma's turn pieces.
    """
    self._sp = spm.SentencePieceProcessor()
    if isinstance(model, bytes):
      self.source = '<bytes>'
      self._proto = model
    else:
      path = pathlib.Path(model)
      if not path.is_file():
        raise FileNotFoundError(f'{path}: SentencePiece model file not found')
      self.source = str(path)
      self._proto = path.read_bytes()
    try:
      self._sp.LoadFromSerializedProto(self._proto)
    except Exception as e:  # sentencepiece raises bare RuntimeError/OSError.
      raise ValueError(
          f'{self.source}: not a SentencePiece model ({e})') from e
    self.vocab_size = self._sp.GetPieceSize()
    self.pad_id, self.bos_id = self._sp.pad_id(), self._sp.bos_id()
    self.eos_id, self.unk_id = self._sp.eos_id(), self._sp.unk_id()
    self.start_of_turn_id = self._special_id(START_OF_TURN)
    self.end_of_turn_id = self._special_id(END_OF_TURN)
    for name, value in (('pad', self.pad_id), ('bos', self.bos_id),
                        ('eos', self.eos_id)):
      if value < 0:
        raise ValueError(f'{self.source}: the model defines no {name} id; '
                         'expected one (Gemma: pad=0, eos=1, bos=2)')

  def _special_id(self, piece: str) -> int:
    piece_id = self._sp.PieceToId(piece)
    if piece_id == self._sp.unk_id() or self._sp.IdToPiece(piece_id) != piece:
      raise ValueError(
          f'{self.source}: the model has no {piece!r} piece; expected a '
          'Gemma tokenizer or one made by train_sentencepiece')
    return piece_id

  @property
  def serialized_proto(self) -> bytes:
    """The model as bytes (to embed in a checkpoint or config)."""
    return self._proto

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text`; `<start_of_turn>`/`<end_of_turn>` stay atomic."""
    ids = self._sp.EncodeAsIds(text)
    return [self.bos_id] + ids if add_bos else ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, skipping pad ids; bos/eos decode to nothing.

    Decoding does not stop at eos or end-of-turn: the caller cuts the ids.
    """
    return self._sp.DecodeIds([int(i) for i in ids if int(i) != self.pad_id])

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.IdToPiece(int(token_id))

  def ids_starting_with(self, text: str) -> list[int]:
    """Ids of every piece whose text starts with `text` (e.g. all newline runs)."""
    want = text.replace(' ', '\u2581')   # SentencePiece writes spaces as U+2581
    pieces = self._sp.IdToPiece(list(range(self.vocab_size)))
    return [i for i, p in enumerate(pieces)
            if p.startswith(want) and not self._sp.IsControl(i)]

  def chat_prompt_ids(self, user_text: str) -> list[int]:
    """The first-turn prompt in Gemma's chat layout.

    [bos] `<start_of_turn>user\\n{user_text}<end_of_turn>\\n`
    `<start_of_turn>model\\n`
    """
    return self.encode(_USER_HEADER + user_text + _TURN_FOOTER + _MODEL_HEADER,
                       add_bos=True)

  def chat_prompt_parts(
      self, user_text: str) -> tuple[list[int], list[int], list[int]]:
    """(header, body, footer) ids of the chat prompt, encoded separately.

    Their concatenation equals `chat_prompt_ids` except, rarely, at the
    header/body seam; truncation uses it to shorten only the body.
    """
    return (self.encode(_USER_HEADER, add_bos=True), self.encode(user_text),
            self.encode(_TURN_FOOTER + _MODEL_HEADER))

  def correction_chunk_ids(self, instruction: str) -> list[int]:
    """Closes y1 and opens the correction turn.

    `<end_of_turn>\\n<start_of_turn>user\\n{instruction}<end_of_turn>\\n`
    `<start_of_turn>model\\n`

    The sampler appends this after y1. Its first token is the end-of-turn that
    closes y1 (drop it when y1 already ended with one).
    """
    return self.encode(
        _TURN_FOOTER + _USER_HEADER + instruction + _TURN_FOOTER +
        _MODEL_HEADER)


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    model_prefix_or_dir: str | os.PathLike[str] | None = None,
    *,
    model_type: str = 'bpe',
    byte_fallback: bool = False,
    user_defined_symbols: Sequence[str] = (),
    character_coverage: float = 1.0,
) -> Tokenizer:
  """Trains a small SentencePiece model with Gemma's special-id layout.

  Deterministic for a given corpus (one thread, no sampling of sentences).
  Text is kept verbatim (identity normalisation, no dummy prefix, whitespace
  kept) so `decode(encode(t)) == t` for text the model covers; digits are
  always split into single pieces.

  Args:
    texts: the training corpus, one sentence (may contain newlines) per item.
    vocab_size: the target size; a soft limit, so a small corpus gives fewer.
    model_prefix_or_dir: where to write `<prefix>.model`; an existing
      directory means `<dir>/tokenizer.model`. None keeps it in memory.
    model_type: 'bpe' (like Gemma) or 'unigram'.
    byte_fallback: map uncovered characters to byte pieces instead of unk
      (adds 256 pieces).
    user_defined_symbols: extra atomic pieces beyond the two turn markers.
    character_coverage: fraction of characters the vocabulary must cover.

  Returns:
    The trained Tokenizer (its `source` is the written file, if any).
  """
  symbols = [START_OF_TURN, END_OF_TURN] + [
      s for s in user_defined_symbols if s not in (START_OF_TURN, END_OF_TURN)]
  options = dict(
      vocab_size=vocab_size, model_type=model_type, split_digits=True,
      user_defined_symbols=symbols, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      pad_piece='<pad>', eos_piece='<eos>', bos_piece='<bos>',
      unk_piece='<unk>', byte_fallback=byte_fallback,
      normalization_rule_name='identity', add_dummy_prefix=False,
      remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
      character_coverage=character_coverage, hard_vocab_limit=False,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      max_sentence_length=1 << 20, minloglevel=2)
  writer = io.BytesIO()
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(texts), model_writer=writer, **options)
  proto = writer.getvalue()
  if model_prefix_or_dir is None:
    return Tokenizer(proto)
  prefix = pathlib.Path(model_prefix_or_dir)
  if prefix.is_dir():
    prefix = prefix / 'tokenizer'
  model_path = prefix.with_name(prefix.name + '.model')
  model_path.write_bytes(proto)
  return Tokenizer(model_path)
