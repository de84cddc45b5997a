"""A SentencePiece model rebuilt from the vocabulary stored in a GGUF file, and back.

llama.cpp's converter copies a SentencePiece model into tokenizer.ggml.* fields:
the pieces (tokens), their scores, their types (the SentencePiece enum: 1 normal,
2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), the special ids and
add_space_prefix (SentencePiece's add_dummy_prefix). Two of its edits are undone:
  * user-defined pieces are stored with U+2581 replaced by ' ' ("pre-normalize
    user-defined spaces"); SentencePiece matches them after escaping whitespace,
    so the U+2581 is put back ('  ' -> '▁▁');
  * pieces the HF tokenizer config calls special are stored as CONTROL, which
    SentencePiece never matches in text. Gemma's own model has <start_of_turn>,
    <end_of_turn>, <mask>, <unusedN>... as user-defined symbols (one id each when
    they appear in text, as transformers and llama.cpp treat them too), so every
    CONTROL piece but pad/bos/eos becomes USER_DEFINED, and unk becomes UNKNOWN.
Gemma's model is BPE with byte fallback, identity normalisation and
whitespace-only pieces; a ModelProto with those settings encodes as transformers'
own GGUF tokenizer does (tests/models/checkpoints check it on the real vocabulary).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

_PIECE = sp_pb2.ModelProto.SentencePiece
_BYTE, _CONTROL, _USER, _UNKNOWN = _PIECE.BYTE, _PIECE.CONTROL, _PIECE.USER_DEFINED, _PIECE.UNKNOWN
_SPECIALS = (('unk', 'unknown_token_id'), ('bos', 'bos_token_id'),
             ('eos', 'eos_token_id'), ('pad', 'padding_token_id'))


def proto_from_gguf(reader: Any) -> sp_pb2.ModelProto:
  """ModelProto from a gguf_io.GGUFReader's tokenizer.ggml.* fields."""
  model = reader.field('tokenizer.ggml.model')
  if model != 'llama':
    raise ValueError(f"{reader.source}: tokenizer.ggml.model={model!r}; expected 'llama' "
                     '(a SentencePiece vocabulary, as llama.cpp stores Gemma\'s)')
  tokens = reader.field_strings('tokenizer.ggml.tokens')
  if not tokens:
    raise ValueError(f'{reader.source}: field tokenizer.ggml.tokens missing or empty')
  scores = reader.field_array('tokenizer.ggml.scores')
  types = reader.field_array('tokenizer.ggml.token_type')
  scores = np.zeros(len(tokens), np.float32) if scores is None else scores
  types = np.ones(len(tokens), np.int32) if types is None else types
  for name, arr in (('scores', scores), ('token_type', types)):
    if len(arr) != len(tokens):
      raise ValueError(f'{reader.source}: tokenizer.ggml.{name} has {len(arr)} entries; '
                       f'expected {len(tokens)} (one per token)')

  special = {}
  for short, field in _SPECIALS:
    idx = reader.field(f'tokenizer.ggml.{field}')
    special[short] = -1 if idx is None else int(idx)
  kept_control = {special['pad'], special['bos'], special['eos']}

  proto = sp_pb2.ModelProto()
  for i, (piece, score, kind) in enumerate(zip(tokens, scores.tolist(), types.tolist())):
    if i == special['unk']:
      kind = _UNKNOWN
    elif kind == _CONTROL and i not in kept_control:
      kind = _USER
    if kind == _USER:
      piece = piece.replace(' ', '\u2581')
    p = proto.pieces.add()
    p.piece, p.score, p.type = piece, score, int(kind)
  spec = proto.trainer_spec
  spec.model_type = sp_pb2.TrainerSpec.BPE
  spec.vocab_size = len(tokens)
  spec.byte_fallback = bool(np.any(types == _BYTE))
  spec.allow_whitespace_only_pieces = True
  spec.split_digits = True
  for short, idx in special.items():
    setattr(spec, f'{short}_id', idx)
    if 0 <= idx < len(tokens):
      setattr(spec, f'{short}_piece', proto.pieces[idx].piece)
  norm = proto.normalizer_spec
  norm.name = 'identity'
  norm.add_dummy_prefix = bool(reader.field('tokenizer.ggml.add_space_prefix', True))
  norm.remove_extra_whitespaces = bool(
      reader.field('tokenizer.ggml.remove_extra_whitespaces', False))
  norm.escape_whitespaces = True
  return proto


def add_to_writer(writer: Any, proto_bytes: bytes) -> None:
  """Writes a SentencePiece model's vocabulary into a gguf.GGUFWriter, as llama.cpp does."""
  proto = sp_pb2.ModelProto()
  proto.ParseFromString(proto_bytes)
  writer.add_tokenizer_model('llama')
  writer.add_token_list([p.piece.replace('\u2581', ' ') if p.type == _USER else p.piece
                         for p in proto.pieces])
  writer.add_token_scores([p.score for p in proto.pieces])
  writer.add_token_types([int(p.type) for p in proto.pieces])
  spec = proto.trainer_spec
  for short, add in (('unk', writer.add_unk_token_id), ('bos', writer.add_bos_token_id),
                     ('eos', writer.add_eos_token_id), ('pad', writer.add_pad_token_id)):
    if getattr(spec, f'{short}_id') >= 0:
      add(getattr(spec, f'{short}_id'))
  writer.add_add_bos_token(True)
  writer.add_add_eos_token(False)
  writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
