"""HF directories of every Gemma generation -> from_hf_config + load_params -> transformers' logits.

Each directory is written by transformers' own save_pretrained from a model of its
class with random weights (norm scales and Gemma 4's layer scalars included), so
config.json holds only what differs from transformers' defaults, exactly as on
the Hub. The multimodal classes (Gemma3/Gemma4ForConditionalGeneration, with a
small vision tower) check that the text part is found and the rest ignored.
Gemma 4 exports (save_safetensors) round-trip bit-exactly and load in transformers.
"""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import ckpt_helpers as h
from score_jax.models import from_hf_config, hf_convert
from score_jax.models.checkpoints import (CheckpointError, load_params, load_pretrained,
                                          load_safetensors, save_safetensors)
from tests.models.test_gemma4_parity import CONFIGS as GEMMA4

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

_TEXT = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16)
_LAYERS = ['sliding_attention', 'full_attention'] * 2
_GEMMA4 = dict(_TEXT, sliding_window=4, layer_types=_LAYERS, global_head_dim=32,
               num_global_key_value_heads=1, attention_k_eq_v=True,
               hidden_size_per_layer_input=8, num_kv_shared_layers=2,
               use_double_wide_mlp=True, final_logit_softcapping=30.0)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=2)
# generation -> (transformers model class, its config built from kwargs)
HF_MODELS = {
    'gemma': ('GemmaForCausalLM', lambda: transformers.GemmaConfig(**_TEXT)),
    'gemma2': ('Gemma2ForCausalLM', lambda: transformers.Gemma2Config(
        **_TEXT, sliding_window=4, query_pre_attn_scalar=24)),
    'gemma3_text': ('Gemma3ForCausalLM', lambda: transformers.Gemma3TextConfig(
        **_TEXT, sliding_window=4, layer_types=_LAYERS, rope_scaling={
            'rope_type': 'linear', 'factor': 8.0})),
    'gemma3': ('Gemma3ForConditionalGeneration', lambda: transformers.Gemma3Config(
        text_config=dict(_TEXT, sliding_window=4, layer_types=_LAYERS),
        vision_config=dict(_VISION, image_size=28, patch_size=14), mm_tokens_per_image=4)),
    'gemma4_text': ('Gemma4ForCausalLM', lambda: transformers.Gemma4TextConfig(**_GEMMA4)),
    'gemma4_moe': ('Gemma4ForCausalLM', lambda: transformers.Gemma4TextConfig(
        **dict(_TEXT, sliding_window=4, layer_types=_LAYERS, hidden_size_per_layer_input=0,
               global_head_dim=32,  # the default 512 makes even float32 HF miss float64 HF by 1e-4
               enable_moe_block=True, num_experts=4, top_k_experts=2,
               moe_intermediate_size=32))),
    'gemma4': ('Gemma4ForConditionalGeneration', lambda: transformers.Gemma4Config(
        text_config=_GEMMA4, vision_config=dict(_VISION, num_key_value_heads=2, head_dim=16),
        audio_config=None)),
}


def _randomize(model, seed=0):
  """Every weight random: matrices ~ N(0, 1/fan_in), vectors (norms, scalars) ~ 1 + N(0, .09)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
      if not p.is_floating_point() or 'rotary' in name or 'embed_scale' in name:
        continue
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(noise * p.shape[-1] ** -0.5 if p.ndim >= 2 else 1.0 + 0.3 * noise)


def _hf_dir(tmp_path, name):
  cls, make_config = HF_MODELS[name]
  model = getattr(transformers, cls)(make_config())
  _randomize(model)
  model.save_pretrained(tmp_path / name, max_shard_size='200KB')
  return model.eval(), tmp_path / name


def _hf_logits(model, tokens_BT):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(tokens_BT.astype(np.int64)), use_cache=False)
  return out.logits.float().numpy()


@pytest.mark.parametrize('name', list(HF_MODELS))
def test_hf_directory_loads_without_preset(tmp_path, name):
  """save_pretrained dir -> from_hf_config + load_params: logits within 1e-4."""
  model, path = _hf_dir(tmp_path, name)
  cfg = from_hf_config(json.loads((path / 'config.json').read_text()))
  params = load_params(path, cfg)
  toks = h.tokens(cfg)
  diff = np.abs(h.logits(cfg, params, toks) - _hf_logits(model, toks)).max()
  print(f'{name}: max |logit diff| vs transformers = {diff:.2e} '
        f'(max |logit| {np.abs(_hf_logits(model, toks)).max():.1f})')
  assert diff <= 1e-4
  if name == 'gemma4':  # the same through the config-section entry point
    got_cfg, got, _ = load_pretrained({'checkpoint': str(path)})
    assert got_cfg == cfg
    np.testing.assert_array_equal(h.logits(cfg, got, toks), h.logits(cfg, params, toks))


@pytest.mark.parametrize('name', sorted(GEMMA4))
def test_gemma4_export_round_trips(tmp_path, name):
  """save_safetensors -> load_safetensors is bit-exact; transformers loads the export."""
  cfg = GEMMA4[name]
  params = h.random_params(cfg)
  out = save_safetensors(tmp_path / name, cfg, params, max_shard_bytes=100_000)
  assert (out / 'model.safetensors.index.json').is_file()
  got, want = h.host(load_safetensors(out, cfg)), h.host(params)
  assert sorted(got) == sorted(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32, attn_implementation='eager').eval()
  assert type(model).__name__ == 'Gemma4ForCausalLM'
  assert from_hf_config(json.loads((out / 'config.json').read_text())).replace(
      name=cfg.name) == cfg
  toks = h.tokens(cfg)
  np.testing.assert_allclose(_hf_logits(model, toks), h.logits(cfg, params, toks),
                             atol=1e-4, rtol=0)


def test_gemma4_plan_agrees_with_hf_convert(tmp_path):
  """Per-tensor import (hf_layout.gemma4_plan) == hf_convert's whole-dict import."""
  for cfg in GEMMA4.values():
    sd = hf_convert.params_to_hf_state_dict(cfg, h.random_params(cfg, seed=3))
    save_file(sd, str(tmp_path / 'model.safetensors'))
    ours = h.host(load_safetensors(tmp_path / 'model.safetensors', cfg))
    theirs = h.host(jax.tree.map(np.asarray, hf_convert.hf_state_dict_to_params(cfg, sd)))
    assert sorted(ours) == sorted(theirs)
    for key in ours:
      np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f'{cfg.name} {key}')


def test_gemma4_wrong_config_names_the_key(tmp_path):
  cfg = GEMMA4['dense']
  save_file(hf_convert.params_to_hf_state_dict(cfg, h.random_params(cfg)),
            str(tmp_path / 'model.safetensors'))
  with pytest.raises(CheckpointError) as e:
    load_safetensors(tmp_path, cfg.replace(global_head_dim=16))
  assert "key 'model.layers.2.self_attn.q_proj.weight' has shape (128, 64); expected (64, 64)" \
      in str(e.value)
