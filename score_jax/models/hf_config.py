"""ModelConfig from a Hugging Face Gemma config.json (Gemma 1, 2, 3 and 4).

  from_hf_config(config: dict) -> ModelConfig

Accepted model_type: gemma, gemma2, gemma3_text, gemma3 (its text_config),
gemma4_text, gemma4 (its text_config). transformers writes only the fields that
differ from its config class's defaults, so absent fields take those defaults
(the tables below are transformers 5.24's configuration_gemma*.py). A field value
the decoders cannot reproduce (a bias, untied head, another activation or RoPE
type, bidirectional attention) raises one ValueError naming the field.
"""
from __future__ import annotations

from typing import Any, Mapping

from score_jax.models.config import AttentionType, ModelConfig

_G, _L = AttentionType.GLOBAL, AttentionType.LOCAL_SLIDING
_COMMON = dict(rms_norm_eps=1e-6, attention_bias=False, tie_word_embeddings=True,
               use_bidirectional_attention=None, final_logit_softcapping=None,
               attn_logit_softcapping=None, rope_parameters=None, layer_types=None)
_DEFAULTS: dict[str, dict[str, Any]] = {
    'gemma': dict(_COMMON, vocab_size=256_000, hidden_size=3072, intermediate_size=24_576,
                  num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16,
                  head_dim=256, hidden_act='gelu_pytorch_tanh'),
    'gemma2': dict(_COMMON, vocab_size=256_000, hidden_size=2304, intermediate_size=9216,
                   num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                   head_dim=256, sliding_window=4096, attn_logit_softcapping=50.0,
                   final_logit_softcapping=30.0, query_pre_attn_scalar=256),
    'gemma3_text': dict(_COMMON, vocab_size=262_208, hidden_size=2304, intermediate_size=9216,
                        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=256, sliding_window=4096, query_pre_attn_scalar=256,
                        sliding_window_pattern=6),
    'gemma4_text': dict(_COMMON, vocab_size=262_144, hidden_size=2304, intermediate_size=9216,
                        num_hidden_layers=30, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=256, sliding_window=512, hidden_size_per_layer_input=256,
                        vocab_size_per_layer_input=262_144, attention_k_eq_v=False,
                        num_kv_shared_layers=0, enable_moe_block=False,
                        use_double_wide_mlp=False, num_experts=None, top_k_experts=None,
                        moe_intermediate_size=None, global_head_dim=512,
                        num_global_key_value_heads=None),
}
_MULTIMODAL = {'gemma3': 'gemma3_text', 'gemma4': 'gemma4_text'}


def from_hf_config(config: Mapping[str, Any], source: str = 'config.json') -> ModelConfig:
  """Our ModelConfig of the text decoder an HF Gemma config describes."""
  model_type = config.get('model_type')
  if model_type in _MULTIMODAL:
    if not isinstance(config.get('text_config'), Mapping):
      raise ValueError(f'{source}: model_type {model_type!r} needs a text_config object')
    config = dict(config['text_config'], model_type=_MULTIMODAL[model_type])
    model_type = config['model_type']
  if model_type not in _DEFAULTS:
    raise ValueError(f'{source}: model_type {model_type!r} is not supported; expected one '
                     f'of {sorted(_DEFAULTS) + sorted(_MULTIMODAL)}')
  c = dict(_DEFAULTS[model_type])
  c.update(config)
  _check_supported(c, model_type, source)
  types = _layer_types(c, model_type, source)
  kw: dict[str, Any] = dict(
      name=str(config.get('_name_or_path') or f'hf_{model_type}'),
      num_layers=c['num_hidden_layers'], vocab_size=c['vocab_size'],
      embed_dim=c['hidden_size'], hidden_dim=c['intermediate_size'],
      num_heads=c['num_attention_heads'], num_kv_heads=c['num_key_value_heads'],
      head_dim=c['head_dim'], norm_eps=c['rms_norm_eps'],
      attention_pattern=_period(types),
      final_logit_softcap=c['final_logit_softcapping'])
  if _L in types:
    kw['sliding_window'] = c['sliding_window']
  if model_type in ('gemma2', 'gemma3_text'):  # (Gemma 4's decoder always has them)
    kw.update(use_post_attn_norm=True, use_post_ffw_norm=True,
              attn_logits_softcap=c['attn_logit_softcapping'],
              query_pre_attn_scalar=c['query_pre_attn_scalar'])
  kw.update(_rope(c, model_type, source))
  if model_type == 'gemma3_text':
    kw['use_qk_norm'] = True
  if model_type == 'gemma4_text':
    kw.update(_gemma4_fields(c, types, source))
  try:
    return ModelConfig(**kw)
  except ValueError as e:
    raise ValueError(f'{source}: {e}') from None


def _check_supported(c: dict, model_type: str, source: str) -> None:
  def bad(field, expect):
    raise ValueError(f'{source}: {field}={c.get(field)!r} is not supported; expected {expect}')
  if c['attention_bias']:
    bad('attention_bias', 'false')
  if not c['tie_word_embeddings']:
    bad('tie_word_embeddings', 'true (Gemma ties the output head to the embedding)')
  if c['use_bidirectional_attention']:
    bad('use_bidirectional_attention', 'null (causal attention)')
  act_field = 'hidden_act' if model_type == 'gemma' else 'hidden_activation'
  allowed = ('gelu_pytorch_tanh', 'gelu') if model_type == 'gemma' else ('gelu_pytorch_tanh',)
  if c.get(act_field, 'gelu_pytorch_tanh') not in allowed:  # Gemma 1's 'gelu' means tanh
    bad(act_field, "'gelu_pytorch_tanh'")
  if c.get('rope_scaling') not in (None, {}) and model_type != 'gemma3_text':
    bad('rope_scaling', 'null')


def _layer_types(c: dict, model_type: str, source: str) -> list[AttentionType]:
  n = c['num_hidden_layers']
  names = c['layer_types']
  if names is None:
    if model_type == 'gemma':
      names = ['full_attention'] * n
    elif model_type == 'gemma2':
      names = ['sliding_attention' if i % 2 == 0 else 'full_attention' for i in range(n)]
    else:
      p = c.get('sliding_window_pattern', 6)
      names = ['sliding_attention' if (i + 1) % p else 'full_attention' for i in range(n)]
  names = list(names)
  if model_type == 'gemma4_text' and names:
    names[-1] = 'full_attention'  # as transformers' Gemma4TextConfig forces
  if len(names) != n or set(names) - {'full_attention', 'sliding_attention'}:
    raise ValueError(f'{source}: layer_types must list {n} of full_attention / '
                     f'sliding_attention; got {names}')
  return [_G if t == 'full_attention' else _L for t in names]


def _period(types: list[AttentionType]) -> tuple[AttentionType, ...]:
  """The shortest pattern whose repetition gives `types` (the decoder scans periods)."""
  for p in range(1, len(types) + 1):
    if all(t == types[i % p] for i, t in enumerate(types)):
      return tuple(types[:p])
  raise AssertionError('unreachable')


def _rope_entry(c: dict, kind: str) -> dict:
  params = c['rope_parameters'] or {}
  if kind in params or 'full_attention' in params:
    return dict(params.get(kind) or {})
  return dict(params)  # Gemma 1/2: one dict for every layer


def _rope(c: dict, model_type: str, source: str) -> dict[str, Any]:
  """rope_base_global/local, rope_scale_global, rope_fraction_global."""
  full, local = _rope_entry(c, 'full_attention'), _rope_entry(c, 'sliding_attention')
  if model_type in ('gemma', 'gemma2'):
    theta = full.get('rope_theta', c.get('rope_theta', 10_000.0))
    full, local = dict(full, rope_theta=theta), dict(local, rope_theta=theta)
  else:
    full.update(c.get('rope_scaling') or {})  # Gemma 3's legacy field
    full.setdefault('rope_theta', c.get('rope_theta', 1_000_000.0))
    local.setdefault('rope_theta', c.get('rope_local_base_freq', 10_000.0))
  allowed = {'gemma': ('default',), 'gemma2': ('default',),
             'gemma3_text': ('default', 'linear'), 'gemma4_text': ('default', 'proportional')}
  for kind, entry, ok in (('full_attention', full, allowed[model_type]),
                          ('sliding_attention', local, ('default',))):
    if entry.get('rope_type', 'default') not in ok:
      raise ValueError(f'{source}: rope_parameters.{kind}.rope_type='
                       f'{entry.get("rope_type")!r} is not supported; expected one of {ok}')
  out = dict(rope_base_global=float(full['rope_theta']),
             rope_base_local=float(local['rope_theta']),
             rope_scale_global=float(full.get('factor', 1.0)))
  if full.get('rope_type') == 'proportional':
    out['rope_fraction_global'] = float(full.get('partial_rotary_factor', 1.0))
  return out


def _gemma4_fields(c: dict, types: list[AttentionType], source: str) -> dict[str, Any]:
  """Global head dims, PLE, KV sharing, double-wide MLP and MoE of a Gemma 4 config."""
  global_head_dim = c['global_head_dim']
  num_global_kv = c['num_global_key_value_heads'] if c['attention_k_eq_v'] else None
  per_layer = c.get('per_layer_config')
  if per_layer is not None:  # how transformers 5.2x saves the global layers' overrides
    entries = {int(i): e for i, e in per_layer.items()}
    shapes = {(e.get('head_dim'), e.get('num_key_value_heads')) for e in entries.values()}
    if len(shapes) > 1 or any(types[i] != _G for i in entries):
      raise ValueError(f'{source}: per_layer_config={per_layer!r} is not supported; '
                       'expected one head_dim / num_key_value_heads for every full layer')
    global_head_dim, num_global_kv = next(iter(shapes), (None, None))
  if c['enable_moe_block'] and not c['num_experts']:
    raise ValueError(f'{source}: enable_moe_block=true needs num_experts')
  moe = bool(c['enable_moe_block'])
  return dict(  # None: the same as the local layers'
      architecture='gemma4',
      global_head_dim=None if global_head_dim in (None, c['head_dim']) else global_head_dim,
      num_global_kv_heads=(None if num_global_kv in (None, c['num_key_value_heads'])
                           else num_global_kv), attention_k_eq_v=bool(c['attention_k_eq_v']),
      per_layer_input_dim=c['hidden_size_per_layer_input'] or 0,
      per_layer_vocab_size=(None if c['vocab_size_per_layer_input'] == c['vocab_size']
                            else c['vocab_size_per_layer_input']),
      num_kv_shared_layers=c['num_kv_shared_layers'] or 0,
      use_double_wide_mlp=bool(c['use_double_wide_mlp']),
      num_experts=c['num_experts'] if moe else 0,
      num_experts_per_token=c['top_k_experts'] if moe else 0,
      expert_hidden_dim=c['moe_intermediate_size'] if moe else 0)
