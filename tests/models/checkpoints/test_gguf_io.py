"""GGUF: tiny float32 files in llama.cpp's Gemma conventions, read back by us and by
transformers' own GGUF loader (which undoes the conventions independently)."""
import numpy as np
import pytest
import sentencepiece as spm

import ckpt_helpers as h
from score_jax.models.checkpoints import (CheckpointError, load_gguf, load_params,
                                          load_tokenizer_proto, save_gguf)
from score_jax.models.checkpoints import gguf_io

gguf = pytest.importorskip('gguf')

# GGUF stores no query_pre_attn_scalar (llama.cpp uses head_dim) and transformers'
# GGUF config mapping reads no RoPE scaling: variants of the tiny presets that both
# can express.
EXPRESSIBLE = {
    'gemma_mqa': h.CONFIGS['gemma_mqa'],
    'gemma_mha': h.CONFIGS['gemma_mha'],
    'gemma2': h.CONFIGS['gemma2'].replace(query_pre_attn_scalar=None),
    'gemma3': h.CONFIGS['gemma3'].replace(query_pre_attn_scalar=None, rope_scale_global=1.0),
}


def _write(tmp_path, cfg, params, name='tiny.gguf'):
  return save_gguf(tmp_path / name, cfg, params, tokenizer_proto=h.tiny_sp_proto())


@pytest.mark.parametrize('name', list(EXPRESSIBLE))
def test_round_trip(tmp_path, name):
  cfg = EXPRESSIBLE[name]
  params = h.random_params(cfg)
  path = _write(tmp_path, cfg, params)
  got = load_params(path, cfg)  # format detected: gguf
  np.testing.assert_allclose(h.logits(cfg, got), h.logits(cfg, params), atol=1e-5, rtol=0)


def test_llama_cpp_conventions(tmp_path):
  """Norms stored as 1 + scale under llama.cpp names; q/k not permuted (HF rows)."""
  cfg = EXPRESSIBLE['gemma3']
  params = h.random_params(cfg)
  reader = gguf.GGUFReader(str(_write(tmp_path, cfg, params)))
  tensors = {t.name: t for t in reader.tensors}
  p = h.host(params)
  np.testing.assert_allclose(tensors['blk.1.ffn_norm.weight'].data,
                             p['layers/pre_ffw_norm/scale'][1] + 1, rtol=0, atol=1e-7)
  np.testing.assert_allclose(tensors['blk.2.attn_k_norm.weight'].data,
                             p['layers/attn/_key_norm/scale'][2] + 1, rtol=0, atol=1e-7)
  q_LDNH = p['layers/attn/q_einsum/w']
  d, n, hd = q_LDNH.shape[1:]
  np.testing.assert_array_equal(tensors['blk.0.attn_q.weight'].data,
                                q_LDNH[0].reshape(d, n * hd).T)
  assert 'output.weight' not in tensors  # tied head, as llama.cpp writes Gemma
  assert reader.fields['general.architecture'].contents() == 'gemma3'


@pytest.mark.parametrize('name', ['gemma2', 'gemma3'])  # transformers has no GGUF 'gemma'
def test_transformers_reads_our_gguf(tmp_path, name):
  """transformers un-shifts the norms and maps the names itself: same logits as ours."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  pytest.importorskip('accelerate')  # transformers' GGUF loading needs it
  cfg = EXPRESSIBLE[name]
  params = h.random_params(cfg)
  path = _write(tmp_path, cfg, params)
  # transformers reads no query scale from GGUF either; its default (256) is the
  # head_dim of the real models, llama.cpp's rule is head_dim: pass the tiny one.
  model = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, gguf_file=path.name, dtype=torch.float32, attn_implementation='eager',
      query_pre_attn_scalar=cfg.head_dim).eval()
  toks = h.tokens(cfg)
  with torch.no_grad():
    theirs = model(torch.from_numpy(toks.astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(theirs, h.logits(cfg, params, toks), atol=1e-4, rtol=0)


def test_tokenizer_round_trip(tmp_path):
  cfg = EXPRESSIBLE['gemma_mqa']
  path = _write(tmp_path, cfg, h.random_params(cfg))
  original = spm.SentencePieceProcessor()
  original.LoadFromSerializedProto(h.tiny_sp_proto())
  rebuilt = spm.SentencePieceProcessor()
  rebuilt.LoadFromSerializedProto(load_tokenizer_proto(path))
  assert rebuilt.GetPieceSize() == original.GetPieceSize() == cfg.vocab_size
  assert [rebuilt.IdToPiece(i) for i in range(cfg.vocab_size)] == [
      original.IdToPiece(i) for i in range(cfg.vocab_size)]
  assert (rebuilt.pad_id(), rebuilt.eos_id(), rebuilt.bos_id(), rebuilt.unk_id()) == (0, 1, 2, 3)
  for text in ['the cat and the hat', '<start_of_turn>user\n  the cat<end_of_turn>\n',
               'xyz 123?  in  thing', 'Unknown CAPS!']:
    assert rebuilt.EncodeAsIds(text) == original.EncodeAsIds(text), text
  # llama.cpp stores user-defined pieces with real spaces; we put U+2581 back.
  reader = gguf.GGUFReader(str(path))
  assert reader.fields['tokenizer.ggml.tokens'].contents(7) == '  '
  assert rebuilt.IdToPiece(7) == '\u2581\u2581'


def test_control_pieces_become_user_defined(tmp_path):
  """Pieces llama.cpp marks CONTROL (HF 'special') are matched in text, but pad/bos/eos
  stay control and unk becomes UNKNOWN."""
  cfg = EXPRESSIBLE['gemma_mqa']
  path = tmp_path / 'ctl.gguf'
  w = gguf.GGUFWriter(str(path), 'gemma')
  w.add_tokenizer_model('llama')
  toks = ['<pad>', '<eos>', '<bos>', '<unk>', '<start_of_turn>', 'a', '\u2581']
  w.add_token_list(toks)
  w.add_token_scores([0.0] * 5 + [-1.0, -2.0])
  w.add_token_types([3, 3, 3, 3, 3, 1, 1])  # as llama.cpp writes Gemma 3's specials
  w.add_bos_token_id(2)
  w.add_eos_token_id(1)
  w.add_unk_token_id(3)
  w.add_pad_token_id(0)
  w.add_add_space_prefix(False)
  w.add_tensor('dummy', np.zeros(4, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  sp = spm.SentencePieceProcessor()
  sp.LoadFromSerializedProto(load_tokenizer_proto(path))
  assert sp.EncodeAsIds('<start_of_turn>a a') == [4, 5, 6, 5]
  assert sp.IsControl(0) and sp.IsControl(1) and sp.IsControl(2) and sp.IsUnknown(3)
  del cfg


def test_metadata_mismatch_is_named(tmp_path):
  cfg = EXPRESSIBLE['gemma2']
  path = _write(tmp_path, cfg, h.random_params(cfg))
  with pytest.raises(CheckpointError) as e:
    load_gguf(path, cfg.replace(name='other', sliding_window=16, num_layers=2))
  msg = str(e.value)
  assert str(path) in msg and 'gemma2.block_count=4; expected 2' in msg
  assert 'gemma2.attention.sliding_window=8; expected 16' in msg
  with pytest.raises(CheckpointError, match="general.architecture='gemma2'; preset 'gemma3_tiny'"):
    load_gguf(path, EXPRESSIBLE['gemma3'])


def test_shape_mismatch_is_named(tmp_path):
  cfg = EXPRESSIBLE['gemma_mqa']
  path = _write(tmp_path, cfg, h.random_params(cfg))
  other = cfg.replace(name='wide', hidden_dim=96)
  with pytest.raises(CheckpointError) as e:
    gguf_io.load_gguf(path, other)
  # The metadata check fires first, naming the field...
  assert 'gemma.feed_forward_length=128; expected 96' in str(e.value)
  # ...and the tensor check names file, key and both shapes.
  reader = gguf_io.GGUFReader(path)
  with pytest.raises(CheckpointError) as e:
    gguf_io.common.assemble(other, gguf_io.gguf_plan(other), reader)
  assert "key 'blk.0.ffn_gate.weight' has shape (128, 64); expected (96, 64)" in str(e.value)


def test_inexpressible_config_refused(tmp_path):
  with pytest.raises(CheckpointError, match='query_pre_attn_scalar=24'):
    save_gguf(tmp_path / 'x.gguf', h.CONFIGS['gemma3'], h.random_params(h.CONFIGS['gemma3']))


def test_fast_header_parser_matches_gguf_reader(tmp_path):
  """gguf_file.GGUFFile (our header parser) reads what gguf.GGUFReader reads: every
  field, and every tensor (F32, F16, BF16, Q8_0, Q4_0) dequantised the same."""
  cfg = EXPRESSIBLE['gemma3']
  path = _write(tmp_path, cfg, h.random_params(cfg))
  extra = tmp_path / 'quant.gguf'
  w = gguf.GGUFWriter(str(extra), 'gemma3')
  w.add_uint32('test.u32', 7)
  w.add_array('test.floats', [1.5, -2.0])
  w.add_array('test.strings', ['a', 'b c'])
  rng = np.random.RandomState(0)
  for qtype in ('F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'):
    t = gguf.GGMLQuantizationType[qtype]
    data = rng.randn(6, 64).astype(np.float32)
    w.add_tensor(qtype, gguf.quants.quantize(data, t), raw_dtype=t)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  for p in (path, extra):
    ref = gguf.GGUFReader(str(p))
    ours = gguf_io.GGUFReader(p)
    for key, field in ref.fields.items():
      if key.startswith('GGUF.'):
        continue
      want, got = field.contents(), ours.field(key)
      got = got.tolist() if isinstance(got, np.ndarray) else got
      assert got == want or np.allclose(got, want), key
    assert sorted(ours.shapes()) == sorted(t.name for t in ref.tensors)
    for t in ref.tensors:
      want = gguf.dequantize(t.data, t.tensor_type).reshape(ours.shapes()[t.name])
      np.testing.assert_array_equal(ours.read(t.name), want, err_msg=t.name)
