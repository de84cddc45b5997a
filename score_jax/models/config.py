"""Gemma 1/2/3/4 model configurations and the named presets.

A preset carries the published dimensions of one open Gemma checkpoint; tiny
presets of each generation exist for tests and the CPU demo. Everything the
forward pass needs to know about a generation is a field here, so the model code
has no `if generation == ...` branches.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax.numpy as jnp


class AttentionType(enum.IntEnum):
  GLOBAL = 0
  LOCAL_SLIDING = 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one Gemma model. Shapes use the letters of CONTRIBUTING.md."""
  name: str
  num_layers: int                      # L
  vocab_size: int                      # V
  embed_dim: int                       # D
  hidden_dim: int                      # F (per GeGLU branch)
  num_heads: int                       # N
  num_kv_heads: int                    # K (1: multi-query; N: multi-head)
  head_dim: int                        # H
  # Attention type of each layer in one period of the pattern; the pattern is
  # repeated over the depth (Gemma 1: all global; 2: local, global; 3: 5 local, 1 global).
  attention_pattern: tuple[AttentionType, ...] = (AttentionType.GLOBAL,)
  sliding_window: int | None = None
  attn_logits_softcap: float | None = None
  final_logit_softcap: float | None = None
  query_pre_attn_scalar: float | None = None   # None: head_dim
  use_post_attn_norm: bool = False
  use_post_ffw_norm: bool = False
  use_qk_norm: bool = False
  rope_base_global: float = 10_000.0
  rope_base_local: float = 10_000.0
  rope_scale_global: float = 1.0       # linear position scaling on global layers
  norm_eps: float = 1e-6
  # Numerics and memory: not architecture, but carried here so one object
  # describes how the model is built.
  param_dtype: str = 'float32'
  dtype: str = 'float32'               # compute dtype of activations
  remat: str = 'none'                  # see transformer.REMAT_POLICIES
  scan_layers: bool = True             # False: unroll the layer loop (for comparison)
  # Gemma 4 (architecture='gemma4', models/gemma4.py; ignored by the Gemma 1-3
  # decoder). Global layers may have their own head_dim / kv heads, share k and v
  # projections, and rotate only a fraction of the head dim ("proportional" RoPE).
  architecture: str = 'gemma'          # 'gemma' (1/2/3) or 'gemma4'
  global_head_dim: int | None = None   # None: head_dim
  num_global_kv_heads: int | None = None   # None: num_kv_heads
  attention_k_eq_v: bool = False       # global layers: value = key projection
  rope_fraction_global: float = 1.0    # fraction of the head dim rotated on global layers
  per_layer_input_dim: int = 0         # P of per-layer embeddings (PLE); 0: none
  per_layer_vocab_size: int | None = None  # PLE table rows; None: vocab_size
  num_kv_shared_layers: int = 0        # the last ones reuse K/V of earlier layers
  use_double_wide_mlp: bool = False    # KV-shared layers' MLPs are 2 x hidden_dim
  num_experts: int = 0                 # E of the MoE block beside the MLP; 0: none
  num_experts_per_token: int = 0       # top-k routing
  expert_hidden_dim: int = 0           # F of one expert

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'{self.name}: num_heads={self.num_heads} is not a multiple '
                       f'of num_kv_heads={self.num_kv_heads}')
    needs_window = AttentionType.LOCAL_SLIDING in self.attention_pattern
    if needs_window and not self.sliding_window:
      raise ValueError(f'{self.name}: a local attention layer needs sliding_window > 0')
    for field in ('param_dtype', 'dtype'):
      if getattr(self, field) not in ('float32', 'bfloat16', 'float16'):
        raise ValueError(f'{self.name}: {field}={getattr(self, field)!r}; expected '
                         "'float32', 'bfloat16' or 'float16'")

    if self.architecture not in ('gemma', 'gemma4'):
      raise ValueError(f"{self.name}: architecture={self.architecture!r}; expected "
                       "'gemma' or 'gemma4'")
    if self.architecture == 'gemma4':
      _check_gemma4(self)

  @property
  def attention_types(self) -> tuple[AttentionType, ...]:
    """The attention type of each of the num_layers layers."""
    p = self.attention_pattern
    return tuple(p[i % len(p)] for i in range(self.num_layers))

  @property
  def query_scale(self) -> float:
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **kwargs: Any) -> ModelConfig:
    return dataclasses.replace(self, **kwargs)


def _check_gemma4(cfg: ModelConfig) -> None:
  """One clear error for a Gemma 4 field value the decoder cannot build."""
  def bad(field, expect):
    raise ValueError(f'{cfg.name}: {field}={getattr(cfg, field)!r}; expected {expect}')
  kv_global = cfg.num_global_kv_heads or cfg.num_kv_heads
  if cfg.num_heads % kv_global:
    bad('num_global_kv_heads', f'a divisor of num_heads={cfg.num_heads}')
  if not 0.0 <= cfg.rope_fraction_global <= 1.0:
    bad('rope_fraction_global', 'a fraction in [0, 1]')
  if not 0 <= cfg.num_kv_shared_layers < cfg.num_layers:
    bad('num_kv_shared_layers', f'0 <= n < num_layers={cfg.num_layers}')
  if cfg.num_kv_shared_layers:
    first = cfg.num_layers - cfg.num_kv_shared_layers
    if set(cfg.attention_types[first:]) - set(cfg.attention_types[:first]):
      bad('num_kv_shared_layers', 'every shared layer type to also occur before the '
          'shared layers (it reuses the K/V of the last such layer)')
  if cfg.num_experts and not (0 < cfg.num_experts_per_token <= cfg.num_experts
                              and cfg.expert_hidden_dim > 0):
    bad('num_experts_per_token', f'1..num_experts={cfg.num_experts}, with '
        'expert_hidden_dim > 0')
  for field in ('attn_logits_softcap', 'query_pre_attn_scalar'):
    if getattr(cfg, field) is not None:
      bad(field, 'None (Gemma 4 scales queries by its qk-norm only)')


_G, _L = AttentionType.GLOBAL, AttentionType.LOCAL_SLIDING
_GEMMA2_PATTERN = (_L, _G)
_GEMMA3_PATTERN = (_L, _L, _L, _L, _L, _G)


def _gemma1(name, **kw):
  return ModelConfig(name=name, vocab_size=kw.pop('vocab_size', 256_000), **kw)


def _gemma2(name, **kw):
  return ModelConfig(
      name=name, vocab_size=kw.pop('vocab_size', 256_000),
      attention_pattern=_GEMMA2_PATTERN,
      sliding_window=kw.pop('sliding_window', 4096),
      attn_logits_softcap=50.0, final_logit_softcap=30.0,
      use_post_attn_norm=True, use_post_ffw_norm=True, **kw)


def _gemma3(name, **kw):
  return ModelConfig(
      name=name, vocab_size=kw.pop('vocab_size', 262_144),
      attention_pattern=_GEMMA3_PATTERN,
      use_post_attn_norm=True, use_post_ffw_norm=True, use_qk_norm=True,
      rope_base_global=1_000_000.0, rope_base_local=10_000.0, **kw)


def _gemma4(name, **kw):
  """Gemma 4 text decoder. Published dims: the text_config of google/gemma-4-*'s
  config.json (transcribed in public parsers, e.g. tests of Go/Swift Gemma 4 ports),
  consistent with transformers' Gemma4TextConfig defaults (configuration_gemma4.py)."""
  return ModelConfig(
      name=name, architecture='gemma4', vocab_size=kw.pop('vocab_size', 262_144),
      attention_pattern=kw.pop('attention_pattern', _GEMMA3_PATTERN),
      head_dim=kw.pop('head_dim', 256), global_head_dim=kw.pop('global_head_dim', 512),
      final_logit_softcap=30.0, rope_base_global=1_000_000.0, rope_base_local=10_000.0,
      rope_fraction_global=0.25, **kw)


_GEMMA4_E_PATTERN = (_L, _L, _L, _L, _G)

PRESETS: dict[str, ModelConfig] = {
    # Gemma 1 (Feb 2024).
    'gemma_2b': _gemma1('gemma_2b', num_layers=18, embed_dim=2048, hidden_dim=16_384,
                        num_heads=8, num_kv_heads=1, head_dim=256),
    'gemma_7b': _gemma1('gemma_7b', num_layers=28, embed_dim=3072, hidden_dim=24_576,
                        num_heads=16, num_kv_heads=16, head_dim=256),
    # Gemma 2 (Jun 2024).
    'gemma2_2b': _gemma2('gemma2_2b', num_layers=26, embed_dim=2304, hidden_dim=9216,
                         num_heads=8, num_kv_heads=4, head_dim=256,
                         query_pre_attn_scalar=256),
    'gemma2_9b': _gemma2('gemma2_9b', num_layers=42, embed_dim=3584, hidden_dim=14_336,
                         num_heads=16, num_kv_heads=8, head_dim=256,
                         query_pre_attn_scalar=256),
    'gemma2_27b': _gemma2('gemma2_27b', num_layers=46, embed_dim=4608, hidden_dim=36_864,
                          num_heads=32, num_kv_heads=16, head_dim=128,
                          query_pre_attn_scalar=4608 // 32),
    # Gemma 3, text decoder (Mar 2025; 270M Aug 2025).
    'gemma3_270m': _gemma3('gemma3_270m', num_layers=18, embed_dim=640, hidden_dim=2048,
                           num_heads=4, num_kv_heads=1, head_dim=256,
                           query_pre_attn_scalar=256, sliding_window=512),
    'gemma3_1b': _gemma3('gemma3_1b', num_layers=26, embed_dim=1152, hidden_dim=6912,
                         num_heads=4, num_kv_heads=1, head_dim=256,
                         query_pre_attn_scalar=256, sliding_window=512),
    'gemma3_4b': _gemma3('gemma3_4b', num_layers=34, embed_dim=2560, hidden_dim=10_240,
                         num_heads=8, num_kv_heads=4, head_dim=256,
                         query_pre_attn_scalar=256, sliding_window=1024,
                         rope_scale_global=8.0),
    'gemma3_12b': _gemma3('gemma3_12b', num_layers=48, embed_dim=3840, hidden_dim=15_360,
                          num_heads=16, num_kv_heads=8, head_dim=256,
                          query_pre_attn_scalar=256, sliding_window=1024,
                          rope_scale_global=8.0),
    'gemma3_27b': _gemma3('gemma3_27b', num_layers=62, embed_dim=5376, hidden_dim=21_504,
                          num_heads=32, num_kv_heads=16, head_dim=128,
                          query_pre_attn_scalar=5376 // 32, sliding_window=1024,
                          rope_scale_global=8.0),
    # Gemma 4, text decoder (Apr 2026): E2B/E4B with per-layer embeddings and KV
    # sharing, a 26B mixture of experts (4B active) and a 31B dense model.
    'gemma4_e2b': _gemma4('gemma4_e2b', num_layers=35, embed_dim=1536, hidden_dim=6144,
                          num_heads=8, num_kv_heads=1, sliding_window=512,
                          attention_pattern=_GEMMA4_E_PATTERN, per_layer_input_dim=256,
                          num_kv_shared_layers=20, use_double_wide_mlp=True),
    'gemma4_e4b': _gemma4('gemma4_e4b', num_layers=42, embed_dim=2560, hidden_dim=10_240,
                          num_heads=8, num_kv_heads=2, sliding_window=512,
                          per_layer_input_dim=256, num_kv_shared_layers=18),
    'gemma4_26b_a4b': _gemma4('gemma4_26b_a4b', num_layers=30, embed_dim=2816,
                              hidden_dim=2112, num_heads=16, num_kv_heads=8,
                              num_global_kv_heads=2, attention_k_eq_v=True,
                              sliding_window=1024, num_experts=128,
                              num_experts_per_token=8, expert_hidden_dim=704),
    'gemma4_31b': _gemma4('gemma4_31b', num_layers=60, embed_dim=5376, hidden_dim=21_504,
                          num_heads=32, num_kv_heads=16, num_global_kv_heads=4,
                          attention_k_eq_v=True, sliding_window=1024),
    # Tiny presets: every architectural feature of their generation, CPU-sized.
    'gemma_tiny': _gemma1('gemma_tiny', num_layers=2, vocab_size=256, embed_dim=64,
                          hidden_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    'gemma2_tiny': _gemma2('gemma2_tiny', num_layers=4, vocab_size=256, embed_dim=64,
                           hidden_dim=128, num_heads=4, num_kv_heads=2, head_dim=16,
                           query_pre_attn_scalar=24, sliding_window=8),
    'gemma3_tiny': _gemma3('gemma3_tiny', num_layers=6, vocab_size=256, embed_dim=64,
                           hidden_dim=128, num_heads=4, num_kv_heads=2, head_dim=16,
                           query_pre_attn_scalar=24, sliding_window=8,
                           rope_scale_global=8.0),
    # Gemma 4 tiny: distinct global head_dim / kv heads, k == v, PLE, the last period
    # KV-shared with double-wide MLPs; and the mixture-of-experts variant.
    'gemma4_tiny': _gemma4('gemma4_tiny', num_layers=6, vocab_size=256, embed_dim=64,
                           hidden_dim=128, num_heads=4, num_kv_heads=2, head_dim=16,
                           global_head_dim=32, num_global_kv_heads=1,
                           attention_k_eq_v=True, sliding_window=8,
                           attention_pattern=(_L, _L, _G), per_layer_input_dim=8,
                           num_kv_shared_layers=3, use_double_wide_mlp=True),
    'gemma4_moe_tiny': _gemma4('gemma4_moe_tiny', num_layers=4, vocab_size=256,
                               embed_dim=64, hidden_dim=64, num_heads=4, num_kv_heads=2,
                               head_dim=16, global_head_dim=32, num_global_kv_heads=1,
                               attention_k_eq_v=True, sliding_window=8,
                               attention_pattern=(_L, _G), num_experts=4,
                               num_experts_per_token=2, expert_hidden_dim=32),
    # ~100M parameters, for CPU benchmarks of the sampler and trainer.
    'gemma3_100m': _gemma3('gemma3_100m', num_layers=16, vocab_size=32_768,
                           embed_dim=640, hidden_dim=2048, num_heads=4, num_kv_heads=1,
                           head_dim=128, sliding_window=512),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
  """Returns the preset `name`, with any field overridden (e.g. dtype='bfloat16')."""
  if name not in PRESETS:
    raise ValueError(f'unknown model preset {name!r}; expected one of: '
                     + ', '.join(sorted(PRESETS)))
  cfg = PRESETS[name]
  unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
  if unknown:
    raise ValueError(f'unknown ModelConfig field(s) {sorted(unknown)} for preset {name!r}')
  return cfg.replace(**overrides) if overrides else cfg
