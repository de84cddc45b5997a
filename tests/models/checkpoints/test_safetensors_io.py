"""HF safetensors: files written by transformers' own save_pretrained read back exactly,
and our export loads in transformers with the same logits."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import ckpt_helpers as h
from score_jax.models import hf_convert
from score_jax.models.checkpoints import (CheckpointError, load_params, load_safetensors,
                                          save_safetensors)

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

HF_CLASSES = {'gemma': 'GemmaForCausalLM', 'gemma2': 'Gemma2ForCausalLM',
              'gemma3_text': 'Gemma3ForCausalLM'}


def _hf_model(cfg, params):
  """transformers' model of `cfg` holding our weights (copied by hf_convert)."""
  config = hf_convert.hf_config(cfg, attn_implementation='eager')
  model = getattr(transformers, HF_CLASSES[hf_convert.hf_model_type(cfg)])(config)
  sd = {k: torch.from_numpy(np.array(v)) for k, v in
        hf_convert.params_to_hf_state_dict(cfg, params).items()}
  missing, unexpected = model.load_state_dict(sd, strict=False)
  assert not unexpected and all('lm_head' in k or 'rotary' in k for k in missing), missing
  return model.eval()


def _hf_logits(model, tokens_BT):
  with torch.no_grad():
    return model(torch.from_numpy(tokens_BT.astype(np.int64))).logits.float().numpy()


@pytest.mark.parametrize('name', list(h.CONFIGS))
def test_transformers_save_pretrained_round_trip(tmp_path, name):
  cfg = h.CONFIGS[name]
  params = h.random_params(cfg)
  expected = h.logits(cfg, params)
  model = _hf_model(cfg, params)
  model.save_pretrained(tmp_path / 'single')
  model.save_pretrained(tmp_path / 'sharded', max_shard_size='40KB')
  assert (tmp_path / 'single' / 'model.safetensors').is_file()
  index = json.loads((tmp_path / 'sharded' / 'model.safetensors.index.json').read_text())
  assert len(set(index['weight_map'].values())) > 2
  for d in ('single', 'sharded'):
    got = load_params(tmp_path / d, cfg)  # format detected: safetensors
    np.testing.assert_allclose(h.logits(cfg, got), expected, atol=1e-5, rtol=0, err_msg=d)


@pytest.mark.parametrize('name', list(h.CONFIGS))
def test_export_loads_in_transformers(tmp_path, name):
  """save_safetensors (sharded) -> AutoModelForCausalLM: the HF class of the
  generation, and its logits match ours (atol 1e-4: two float32 implementations)."""
  cfg = h.CONFIGS[name]
  params = h.random_params(cfg)
  out = save_safetensors(tmp_path / name, cfg, params, max_shard_bytes=60_000)
  assert (out / 'config.json').is_file() and (out / 'model.safetensors.index.json').is_file()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32, attn_implementation='eager').eval()
  assert type(model).__name__ == HF_CLASSES[hf_convert.hf_model_type(cfg)]
  toks = h.tokens(cfg)
  np.testing.assert_allclose(_hf_logits(model, toks), h.logits(cfg, params, toks),
                             atol=1e-4, rtol=0)
  np.testing.assert_allclose(h.logits(cfg, load_safetensors(out, cfg)),
                             h.logits(cfg, params), atol=1e-5, rtol=0)


def test_bfloat16_export_reads_back(tmp_path):
  cfg = h.CONFIGS['gemma2']
  params = h.random_params(cfg)
  out = save_safetensors(tmp_path / 'bf16', cfg, params, dtype='bfloat16')
  got = load_safetensors(out, cfg)
  want = h.host(params)['layers/mlp/linear']
  np.testing.assert_allclose(h.host(got)['layers/mlp/linear'], want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('prefix', ['model.language_model.', 'language_model.model.'])
def test_multimodal_gemma3_prefixes(tmp_path, prefix):
  """Gemma3ForConditionalGeneration keys: decoder under `prefix`, vision keys ignored."""
  cfg = h.CONFIGS['gemma3']
  params = h.random_params(cfg)
  sd = hf_convert.params_to_hf_state_dict(cfg, params, prefix=prefix)
  sd['model.vision_tower.vision_model.embeddings.patch_embedding.weight'] = np.zeros(
      (4, 3, 2, 2), np.float32)
  sd['model.multi_modal_projector.mm_input_projection_weight'] = np.zeros((8, 64), np.float32)
  save_file(sd, str(tmp_path / 'model.safetensors'), metadata={'format': 'pt'})
  np.testing.assert_allclose(h.logits(cfg, load_params(tmp_path, cfg)), h.logits(cfg, params),
                             atol=1e-5, rtol=0)


def test_plan_agrees_with_hf_convert(tmp_path):
  """Per-tensor import (hf_layout) == hf_convert's whole-dict import, for every generation."""
  for cfg in h.CONFIGS.values():
    sd = hf_convert.params_to_hf_state_dict(cfg, h.random_params(cfg, seed=3))
    save_file(sd, str(tmp_path / 'model.safetensors'))
    ours = h.host(load_safetensors(tmp_path / 'model.safetensors', cfg))
    theirs = h.host(hf_convert.hf_state_dict_to_params(cfg, sd))
    assert sorted(ours) == sorted(theirs)
    for key in ours:
      np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f'{cfg.name} {key}')


def test_wrong_preset_and_untied_head(tmp_path):
  cfg = h.CONFIGS['gemma2']
  sd = hf_convert.params_to_hf_state_dict(cfg, h.random_params(cfg))
  path = tmp_path / 'model.safetensors'
  save_file(sd, str(path))
  with pytest.raises(CheckpointError) as e:
    load_safetensors(path, h.CONFIGS['gemma_mqa'])
  msg = str(e.value)
  assert str(path) in msg and "preset 'gemma_tiny'" in msg
  # gemma2_tiny: 2 KV heads x 16 = 32 rows; gemma_tiny has a single KV head.
  assert "key 'model.layers.0.self_attn.k_proj.weight' has shape (32, 64); expected (16, 64)" in msg
  assert 'unexpected key(s)' in msg  # layers 2, 3 and the extra norms

  sd['lm_head.weight'] = sd['model.embed_tokens.weight'] + 1
  save_file(sd, str(path))
  with pytest.raises(CheckpointError, match="'lm_head.weight' differs from"):
    load_safetensors(path, cfg)


def test_not_a_checkpoint(tmp_path):
  with pytest.raises(CheckpointError, match='expected a .safetensors file, or a directory'):
    load_safetensors(tmp_path, h.CONFIGS['gemma2'])
  (tmp_path / 'model.safetensors.index.json').write_text('{"weight_map": {"a": "x.safetensors"}}')
  with pytest.raises(CheckpointError, match=r"shard file\(s\) \['x.safetensors'\]"):
    load_safetensors(tmp_path, h.CONFIGS['gemma2'])


def test_padded_vocabulary_gets_a_hint(tmp_path):
  """Published checkpoints pad the vocabulary differently (Flax Gemma 2: 256128 rows,
  HF: 256000): the error says which vocab_size override loads the file."""
  cfg = h.CONFIGS['gemma2']
  big = cfg.replace(vocab_size=cfg.vocab_size + 64)
  save_file(hf_convert.params_to_hf_state_dict(big, h.random_params(big)),
            str(tmp_path / 'model.safetensors'))
  with pytest.raises(CheckpointError, match='preset override vocab_size=320'):
    load_safetensors(tmp_path, cfg)
  assert load_safetensors(tmp_path, big)['embedder']['input_embedding'].shape == (320, 64)
