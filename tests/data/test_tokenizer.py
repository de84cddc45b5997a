"""Tests of score_jax.data.tokenizer against hand-written Gemma layouts."""
import io

import pytest
import sentencepiece as spm

from score_jax.data import tokenizer as tokenizer_lib

_CORPUS = [
    '<start_of_turn>user\nWhat is 123+456?<end_of_turn>\n'
    '<start_of_turn>model\nThe answer is 579.<end_of_turn>\n',
    'Check and correct the code: def f(x):\n    return x * 2\n',
    'the quick brown fox jumps over the lazy dog 0123456789 + - = ( ) :',
] * 20


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.train_sentencepiece(_CORPUS, vocab_size=120)


def test_special_ids_follow_gemma(tok):
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.id_to_piece(tok.start_of_turn_id) == '<start_of_turn>'
  assert tok.id_to_piece(tok.end_of_turn_id) == '<end_of_turn>'
  assert tok.encode('<start_of_turn>') == [tok.start_of_turn_id]
  assert tok.encode('<end_of_turn>') == [tok.end_of_turn_id]
  assert tok.vocab_size <= 120


@pytest.mark.parametrize('text', [
    'What is 123+456?', 'def f(x):\n    return x * 2\n', '  two  spaces ',
    'line\n\nbreaks\n'])
def test_round_trip(tok, text):
  assert tok.decode(tok.encode(text)) == text


def test_encode_add_bos_and_decode_skips_pad(tok):
  ids = tok.encode('fox', add_bos=True)
  assert ids[0] == tok.bos_id and ids[1:] == tok.encode('fox')
  assert tok.decode([tok.pad_id] + ids + [tok.eos_id, tok.pad_id]) == 'fox'


def test_every_digit_is_its_own_piece(tok):
  ids = tok.encode('x=9876543210')
  digit_pieces = [tok.id_to_piece(i) for i in ids if tok.id_to_piece(i)
                  .isdigit()]
  assert digit_pieces == list('9876543210')
  assert len(tok.encode('0123456789')) == 10


def test_chat_prompt_is_the_gemma_layout(tok):
  ids = tok.chat_prompt_ids('What is 2+2?')
  expected_text = ('<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n'
                   '<start_of_turn>model\n')
  assert ids[0] == tok.bos_id
  assert ids == [tok.bos_id] + tok.encode(expected_text)
  assert tok.decode(ids) == expected_text
  assert ids[1] == tok.start_of_turn_id
  assert ids.count(tok.start_of_turn_id) == 2
  assert ids.count(tok.end_of_turn_id) == 1
  assert ids[-len(tok.encode('<start_of_turn>model\n')):] == tok.encode(
      '<start_of_turn>model\n')
  header, body, footer = tok.chat_prompt_parts('What is 2+2?')
  assert header + body + footer == ids


def test_correction_chunk_layout(tok):
  ids = tok.correction_chunk_ids('Check and correct.')
  assert ids[0] == tok.end_of_turn_id
  assert tok.decode(ids) == ('<end_of_turn>\n<start_of_turn>user\nCheck and '
                             'correct.<end_of_turn>\n<start_of_turn>model\n')
  # Prompt + y1 + chunk reads as a well-formed two-turn conversation.
  convo = tok.chat_prompt_ids('2+2?') + tok.encode('4') + ids
  assert tok.decode(convo) == (
      '<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n4'
      '<end_of_turn>\n<start_of_turn>user\nCheck and correct.<end_of_turn>\n'
      '<start_of_turn>model\n')


def test_load_from_path_and_bytes_agree(tok, tmp_path):
  written = tokenizer_lib.train_sentencepiece(_CORPUS, 120, tmp_path)
  assert (tmp_path / 'tokenizer.model').is_file()
  assert written.source == str(tmp_path / 'tokenizer.model')
  from_bytes = tokenizer_lib.Tokenizer(written.serialized_proto)
  text = 'the lazy dog 42'
  assert from_bytes.encode(text) == written.encode(text) == tok.encode(text)


def test_training_is_deterministic():
  a = tokenizer_lib.train_sentencepiece(_CORPUS, 120)
  b = tokenizer_lib.train_sentencepiece(_CORPUS, 120)
  assert a.serialized_proto == b.serialized_proto


def test_model_without_turn_pieces_is_rejected(tmp_path):
  writer = io.BytesIO()
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(['plain text only 123'] * 10),
      model_writer=writer, vocab_size=30, hard_vocab_limit=False,
      minloglevel=2)
  path = tmp_path / 'plain.model'
  path.write_bytes(writer.getvalue())
  with pytest.raises(ValueError, match=r'plain\.model.*<start_of_turn>'):
    tokenizer_lib.Tokenizer(path)


def test_missing_and_garbage_files_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.model'):
    tokenizer_lib.Tokenizer(tmp_path / 'nope.model')
  bad = tmp_path / 'bad.model'
  bad.write_bytes(b'not a proto')
  with pytest.raises(ValueError, match='bad.model'):
    tokenizer_lib.Tokenizer(bad)
