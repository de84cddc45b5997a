"""Gemma 1/2/3/4 in Flax NNX: presets, the decoders and their KV caches."""
from score_jax.models.config import AttentionType, ModelConfig, PRESETS, get_preset
from score_jax.models.factory import create_model
from score_jax.models.gemma4 import Gemma4Cache, Gemma4Transformer
from score_jax.models.hf_config import from_hf_config
from score_jax.models.transformer import (KVCache, Transformer, causal_mask, count_params,
                                          init_cache)

__all__ = ['AttentionType', 'ModelConfig', 'PRESETS', 'get_preset', 'KVCache',
           'Gemma4Cache', 'Gemma4Transformer', 'Transformer', 'causal_mask',
           'count_params', 'create_model', 'from_hf_config', 'init_cache']
