"""hf_convert: exact round trips, HF's own state dicts, bfloat16, and clear errors.

Numerical agreement of the converted models is test_hf_parity.py's job; here the
layout itself: every tensor survives ours -> HF -> ours bit for bit, an HF
model's state_dict survives HF -> ours -> HF, and bad input names the key.
"""
import jax
import numpy as np
import pytest
from flax import nnx

from score_jax.models import get_preset
from score_jax.models import hf_convert

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

CONFIGS = {
    'gemma_mqa': get_preset('gemma_tiny'),
    'gemma_mha': get_preset('gemma_tiny').replace(name='gemma_tiny_mha', num_kv_heads=4),
    'gemma2': get_preset('gemma2_tiny'),
    'gemma3': get_preset('gemma3_tiny'),
}


def _pure(model):
  return nnx.state(model, nnx.Param).to_pure_dict()


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_ours_to_hf_to_ours_is_exact(name, random_model):
  cfg = CONFIGS[name]
  params = _pure(random_model(cfg))
  sd = hf_convert.params_to_hf_state_dict(cfg, params)
  assert 'lm_head.weight' not in sd
  back = hf_convert.hf_state_dict_to_params(cfg, sd)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize('name', ['gemma_mha', 'gemma3'])
def test_hf_state_dict_to_ours_to_hf_is_exact(name):
  cfg = CONFIGS[name]
  hf_cls = {'gemma': transformers.GemmaForCausalLM,
            'gemma3_text': transformers.Gemma3ForCausalLM}[hf_convert.hf_model_type(cfg)]
  torch.manual_seed(0)
  hf_model = hf_cls(hf_convert.hf_config(cfg))
  with torch.no_grad():  # HF initialises norms to 0: make them distinguishable
    for k, v in hf_model.named_parameters():
      if 'norm' in k:
        v.normal_()
  sd = hf_model.state_dict()  # torch tensors, tied lm_head.weight included
  params = hf_convert.hf_state_dict_to_params(cfg, sd)
  back = hf_convert.params_to_hf_state_dict(cfg, params)
  assert set(back) == set(sd) - {'lm_head.weight'}
  for k, v in back.items():
    assert np.array_equal(v, sd[k].numpy()), k


def test_bfloat16_tensors_convert_exactly():
  cfg = CONFIGS['gemma3'].replace(param_dtype='bfloat16')
  hf_model = transformers.Gemma3ForCausalLM(hf_convert.hf_config(cfg)).to(torch.bfloat16)
  sd = hf_model.state_dict()
  params = hf_convert.hf_state_dict_to_params(cfg, sd)
  q_DH = np.asarray(params['layers']['attn']['q_einsum']['w'][1, :, 2])  # layer 1, head 2
  q_ref = sd['model.layers.1.self_attn.q_proj.weight'].float().numpy()
  h = cfg.head_dim
  assert q_DH.dtype == np.dtype('bfloat16')
  assert np.array_equal(q_DH.astype(np.float32), q_ref[2 * h:3 * h].T)
  back = hf_convert.params_to_hf_state_dict(cfg, params)
  assert back['model.norm.weight'].dtype == np.dtype('bfloat16')


def test_hf_config_of_gemma3_4b_matches_the_published_text_config():
  hf_cfg = hf_convert.hf_config(get_preset('gemma3_4b'))
  assert isinstance(hf_cfg, transformers.Gemma3TextConfig)
  assert (hf_cfg.hidden_size, hf_cfg.intermediate_size, hf_cfg.num_hidden_layers,
          hf_cfg.num_attention_heads, hf_cfg.num_key_value_heads, hf_cfg.head_dim,
          hf_cfg.query_pre_attn_scalar, hf_cfg.sliding_window) == (
              2560, 10_240, 34, 8, 4, 256, 256, 1024)
  full, local = hf_cfg.rope_parameters['full_attention'], \
      hf_cfg.rope_parameters['sliding_attention']
  assert (full['rope_type'], full['factor'], full['rope_theta']) == ('linear', 8.0, 1e6)
  assert (local['rope_type'], local['rope_theta']) == ('default', 1e4)
  assert hf_cfg.layer_types[:6] == ['sliding_attention'] * 5 + ['full_attention']
  assert hf_cfg.attn_logit_softcapping is None and hf_cfg.final_logit_softcapping is None


def test_hf_config_of_gemma2_9b():
  hf_cfg = hf_convert.hf_config(get_preset('gemma2_9b'))
  assert isinstance(hf_cfg, transformers.Gemma2Config)
  assert (hf_cfg.sliding_window, hf_cfg.attn_logit_softcapping,
          hf_cfg.final_logit_softcapping, hf_cfg.query_pre_attn_scalar) == (4096, 50.0, 30.0, 256)
  assert hf_cfg.layer_types[:2] == ['sliding_attention', 'full_attention']


def test_config_no_hf_class_can_express_is_rejected():
  cfg = get_preset('gemma_tiny').replace(attention_pattern=get_preset('gemma2_tiny')
                                         .attention_pattern, sliding_window=4)
  with pytest.raises(ValueError, match='attention_pattern'):
    hf_convert.hf_model_type(cfg)
  with pytest.raises(ValueError, match='rope_scale_global'):
    hf_convert.hf_model_type(get_preset('gemma2_tiny').replace(rope_scale_global=2.0))


def _sd(cfg, random_model):
  return hf_convert.params_to_hf_state_dict(cfg, random_model(cfg))


def test_missing_key_is_named(random_model):
  cfg = CONFIGS['gemma2']
  sd = _sd(cfg, random_model)
  del sd['model.layers.3.post_feedforward_layernorm.weight']
  with pytest.raises(ValueError, match=r'model\.layers\.3\.post_feedforward_layernorm'):
    hf_convert.hf_state_dict_to_params(cfg, sd)


def test_wrong_shape_is_named(random_model):
  cfg = CONFIGS['gemma2']
  sd = _sd(cfg, random_model)
  sd['model.layers.0.mlp.up_proj.weight'] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r'up_proj.*\(3, 3\).*\(128, 64\)'):
    hf_convert.hf_state_dict_to_params(cfg, sd)


def test_unexpected_key_and_untied_head_are_rejected(random_model):
  cfg = CONFIGS['gemma_mqa']
  sd = _sd(cfg, random_model)
  with pytest.raises(ValueError, match='unexpected keys'):
    hf_convert.hf_state_dict_to_params(cfg, {**sd, 'model.layers.0.extra.weight': 0})
  hf_convert.hf_state_dict_to_params(cfg, {**sd, 'model.layers.0.extra.weight': 0},
                                     strict=False)
  head = sd['model.embed_tokens.weight'] + 1
  with pytest.raises(ValueError, match='lm_head'):
    hf_convert.hf_state_dict_to_params(cfg, {**sd, 'lm_head.weight': head})
