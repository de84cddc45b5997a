"""from_hf_config: every generation's config.json back to the same ModelConfig; clear errors.

The config dicts are what transformers writes (to_json_string(use_diff=True):
only fields that differ from its defaults), from hf_convert.hf_config of our tiny
configs, so a field dropped for equalling a default must be restored by ours.
"""
import json

import pytest

from score_jax.models import AttentionType, from_hf_config, get_preset, hf_convert
from tests.models.test_gemma4_parity import CONFIGS as GEMMA4

transformers = pytest.importorskip('transformers')

OURS = {'gemma': get_preset('gemma_tiny'), 'gemma2': get_preset('gemma2_tiny'),
        'gemma3': get_preset('gemma3_tiny'),
        **{f'gemma4_{k}': v for k, v in GEMMA4.items()}}


def _saved(cfg) -> dict:
  return json.loads(hf_convert.hf_config(cfg).to_json_string(use_diff=True))


@pytest.mark.parametrize('name', sorted(OURS))
def test_round_trip_through_transformers_config(name):
  cfg = OURS[name]
  assert from_hf_config(_saved(cfg)).replace(name=cfg.name) == cfg


def test_multimodal_configs_use_their_text_config():
  text = _saved(GEMMA4['ple_shared'])
  wrapped = {'model_type': 'gemma4', 'text_config': text, 'vision_config': {}}
  assert from_hf_config(wrapped) == from_hf_config(text)
  g3 = _saved(get_preset('gemma3_tiny'))
  assert from_hf_config({'model_type': 'gemma3', 'text_config': g3}) == from_hf_config(g3)


def test_legacy_gemma3_fields():
  """Hub Gemma 3 configs: rope_theta, rope_local_base_freq, rope_scaling, sliding_window_pattern."""
  legacy = {'model_type': 'gemma3_text', 'num_hidden_layers': 8, 'rope_theta': 1e6,
            'rope_local_base_freq': 1e4, 'rope_scaling': {'rope_type': 'linear', 'factor': 8.0},
            'sliding_window_pattern': 4, 'sliding_window': 16}
  cfg = from_hf_config(legacy)
  local, full = AttentionType.LOCAL_SLIDING, AttentionType.GLOBAL
  assert cfg.attention_pattern == (local, local, local, full) and cfg.num_layers == 8
  assert (cfg.rope_base_global, cfg.rope_base_local, cfg.rope_scale_global) == (1e6, 1e4, 8.0)


@pytest.mark.parametrize('change, field', [
    ({'model_type': 'llama'}, "model_type 'llama' is not supported"),
    ({'attention_bias': True}, 'attention_bias=True is not supported'),
    ({'hidden_activation': 'relu'}, "hidden_activation='relu' is not supported"),
    ({'tie_word_embeddings': False}, 'tie_word_embeddings=False is not supported'),
    ({'rope_parameters': {'full_attention': {'rope_type': 'yarn', 'rope_theta': 1.0},
                          'sliding_attention': {'rope_type': 'default'}}},
     "rope_parameters.full_attention.rope_type='yarn' is not supported"),
    ({'use_bidirectional_attention': 'all'}, 'use_bidirectional_attention'),
])
def test_unsupported_values_name_the_field(change, field):
  config = dict(_saved(GEMMA4['dense']), **change)
  with pytest.raises(ValueError) as e:
    from_hf_config(config, source='ckpt/config.json')
  assert str(e.value).startswith('ckpt/config.json: ') and field in str(e.value)
  assert '\n' not in str(e.value)
