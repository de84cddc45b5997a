"""Gemma 1/2/3 in Flax NNX: presets, the transformer and its KV cache."""
from score_jax.models.config import AttentionType, ModelConfig, PRESETS, get_preset
from score_jax.models.transformer import (KVCache, Transformer, causal_mask, count_params,
                                          init_cache)

__all__ = ['AttentionType', 'ModelConfig', 'PRESETS', 'get_preset', 'KVCache',
           'Transformer', 'causal_mask', 'count_params', 'init_cache']
