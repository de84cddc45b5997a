"""Conversion between our Gemma 4 parameters and transformers' Gemma4 layout.

The Gemma 4 side of models/hf_convert.py (which dispatches here on
cfg.architecture == 'gemma4'):

  hf_config(cfg)                      -> transformers.Gemma4TextConfig
  params_to_hf_state_dict(cfg, state) -> {'model.layers.0.self_attn.q_proj.weight': np, ...}
  hf_state_dict_to_params(cfg, sd)    -> pure nested dict for nnx.replace_by_pure_dict

Our layers are stacked per kind (models/gemma4.py): HF layer i is entry
index_in_kind[i] of layers_<kind>. Per layer, beyond Gemma 3's names:
  attn/k_einsum/w (D, K, H)         <-> self_attn.k_proj (k == v layers; no v_proj)
  attn/query_norm, attn/key_norm    <-> self_attn.q_norm, self_attn.k_norm
  post_ffw_norm_1, pre_ffw_norm_2, post_ffw_norm_2 <-> the same names in HF spelling
  moe/router (D, E)                 <-> router.proj.weight (E, D)
  moe/router_scale, per_expert_scale <-> router.scale, router.per_expert_scale
  moe/gating_einsum (E, 2, D, F)    <-> experts.gate_up_proj (E, 2F, D)
  moe/linear (E, F, D)              <-> experts.down_proj (E, D, F)
  per_layer_input_gate (D, P)       <-> per_layer_input_gate.weight (P, D)
  per_layer_projection (P, D)       <-> per_layer_projection.weight (D, P)
  layer_scalar (1,)                 <-> layer_scalar
and at the top: per_layer_embedding <-> embed_tokens_per_layer, per_layer_model_projection
(D, L*P) <-> per_layer_model_projection.weight (L*P, D), per_layer_projection_norm.
Norm scales map 1:1 (Gemma 4 multiplies by the weight itself). KV-shared layers
have no k/v weights here; HF checkpoints may carry unused ones, which are skipped.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from score_jax.models.config import AttentionType, ModelConfig
from score_jax.models.gemma4 import _index_in_kind, layer_kinds
from score_jax.models.gemma4_layers import layer_dims

_NORMS = {'pre_attention_norm': 'input_layernorm',
          'post_attention_norm': 'post_attention_layernorm',
          'pre_ffw_norm': 'pre_feedforward_layernorm',
          'post_ffw_norm': 'post_feedforward_layernorm',
          'post_ffw_norm_1': 'post_feedforward_layernorm_1',
          'pre_ffw_norm_2': 'pre_feedforward_layernorm_2',
          'post_ffw_norm_2': 'post_feedforward_layernorm_2',
          'post_per_layer_input_norm': 'post_per_layer_input_norm',
          'attn/query_norm': 'self_attn.q_norm', 'attn/key_norm': 'self_attn.k_norm'}


def hf_config(cfg: ModelConfig, **overrides: Any):
  """transformers.Gemma4TextConfig of the same model."""
  import transformers  # pylint: disable=g-import-not-at-top  (test/export-only dependency)
  full = {'rope_type': 'proportional', 'rope_theta': cfg.rope_base_global,
          'partial_rotary_factor': cfg.rope_fraction_global}
  if cfg.rope_scale_global != 1.0:
    full['factor'] = float(cfg.rope_scale_global)
  if cfg.num_global_kv_heads not in (None, cfg.num_kv_heads) and not cfg.attention_k_eq_v:
    raise ValueError(f'hf_convert: config {cfg.name!r}: num_global_kv_heads needs '
                     'attention_k_eq_v=True in transformers\' Gemma 4')
  kw = dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.hidden_dim,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
      global_head_dim=cfg.global_head_dim or cfg.head_dim,
      num_global_key_value_heads=cfg.num_global_kv_heads,
      attention_k_eq_v=cfg.attention_k_eq_v, rms_norm_eps=cfg.norm_eps,
      tie_word_embeddings=True, attention_bias=False, hidden_activation='gelu_pytorch_tanh',
      sliding_window=cfg.sliding_window or 512,
      layer_types=['sliding_attention' if t == AttentionType.LOCAL_SLIDING
                   else 'full_attention' for t in cfg.attention_types],
      rope_parameters={'full_attention': full, 'sliding_attention': {
          'rope_type': 'default', 'rope_theta': cfg.rope_base_local}},
      final_logit_softcapping=cfg.final_logit_softcap,
      hidden_size_per_layer_input=cfg.per_layer_input_dim,
      vocab_size_per_layer_input=cfg.per_layer_vocab_size or cfg.vocab_size,
      num_kv_shared_layers=cfg.num_kv_shared_layers,
      use_double_wide_mlp=cfg.use_double_wide_mlp,
      enable_moe_block=bool(cfg.num_experts), num_experts=cfg.num_experts or None,
      top_k_experts=cfg.num_experts_per_token or None,
      moe_intermediate_size=cfg.expert_hidden_dim or None)
  kw.update(overrides)
  return transformers.Gemma4TextConfig(**kw)


def _layer_maps(cfg: ModelConfig, kind: str) -> list[tuple[str, str, Callable, Callable]]:
  """(our path, HF name, ours -> HF, HF -> ours) of every weight of a layer kind.

  Paths are '/'-joined under layers_<kind>, without the stacked axis.
  """
  n, d = cfg.num_heads, cfg.embed_dim
  k, h = layer_dims(cfg, kind)
  t = lambda a: a.T
  out = lambda m: (lambda a: a.reshape(d, m * h).T,   # (D, m, H) <-> (m*H, D)
                   lambda a: a.T.reshape(d, m, h))
  maps = [('attn/q_einsum/w', 'self_attn.q_proj.weight', *out(n)),
          ('attn/attn_vec_einsum/w', 'self_attn.o_proj.weight',
           lambda a: a.reshape(n * h, d).T, lambda a: a.T.reshape(n, h, d)),
          ('mlp/linear', 'mlp.down_proj.weight', t, t),
          ('layer_scalar', 'layer_scalar', lambda a: a, lambda a: a)]
  for c, name in enumerate(('gate_proj', 'up_proj')):
    maps.append((f'mlp/gating_einsum#{c}', f'mlp.{name}.weight', t, t))
  if not kind.endswith('_shared'):
    if cfg.attention_k_eq_v and kind == 'global':
      maps.append(('attn/k_einsum/w', 'self_attn.k_proj.weight', *out(k)))
    else:
      maps += [('attn/kv_einsum/w#0', 'self_attn.k_proj.weight', *out(k)),
               ('attn/kv_einsum/w#1', 'self_attn.v_proj.weight', *out(k))]
  norms = [o for o in _NORMS if not (o == 'attn/key_norm' and kind.endswith('_shared'))
           and not (o[-2:] in ('_1', '_2') and not cfg.num_experts)
           and not (o.startswith('post_per') and not cfg.per_layer_input_dim)]
  maps += [(o + '/scale', _NORMS[o] + '.weight', lambda a: a, lambda a: a) for o in norms]
  if cfg.num_experts:
    f = cfg.expert_hidden_dim
    maps += [('moe/router', 'router.proj.weight', t, t),
             ('moe/router_scale', 'router.scale', lambda a: a, lambda a: a),
             ('moe/per_expert_scale', 'router.per_expert_scale', lambda a: a, lambda a: a),
             ('moe/gating_einsum', 'experts.gate_up_proj',
              lambda a: a.transpose(0, 1, 3, 2).reshape(a.shape[0], 2 * f, d),
              lambda a: a.reshape(a.shape[0], 2, f, d).transpose(0, 1, 3, 2)),
             ('moe/linear', 'experts.down_proj', lambda a: a.transpose(0, 2, 1),
              lambda a: a.transpose(0, 2, 1))]
  if cfg.per_layer_input_dim:
    maps += [('per_layer_input_gate', 'per_layer_input_gate.weight', t, t),
             ('per_layer_projection', 'per_layer_projection.weight', t, t)]
  return maps


def _top_maps(cfg: ModelConfig) -> list[tuple[str, str, Callable, Callable]]:
  same = lambda a: a
  maps = [('embedder/input_embedding', 'embed_tokens.weight', same, same),
          ('final_norm/scale', 'norm.weight', same, same)]
  if cfg.per_layer_input_dim:
    maps += [('per_layer_embedding', 'embed_tokens_per_layer.weight', same, same),
             ('per_layer_model_projection', 'per_layer_model_projection.weight',
              lambda a: a.T, lambda a: a.T),
             ('per_layer_projection_norm/scale', 'per_layer_projection_norm.weight',
              same, same)]
  return maps


# Axis of the '#c' components in a stacked (L, ...) weight: gating_einsum (D, 2, F)
# and kv_einsum (D, 2, K, H) both keep them after the input axis.
COMPONENT_AXIS = 2


def _get(tree: Mapping, path: str) -> np.ndarray:
  name, _, comp = path.partition('#')
  for part in name.split('/'):
    tree = tree[part]
  return np.take(tree, int(comp), axis=COMPONENT_AXIS) if comp else tree


def params_to_hf_state_dict(cfg: ModelConfig, p: Mapping, prefix: str = 'model.'
                            ) -> dict[str, np.ndarray]:
  """HF-named numpy arrays from our pure (numpy) param dict; lm_head omitted (tied)."""
  sd = {prefix + theirs: fwd(_get(p, ours)) for ours, theirs, fwd, _ in _top_maps(cfg)}
  kinds, idx = layer_kinds(cfg), _index_in_kind(layer_kinds(cfg))
  maps = {kind: _layer_maps(cfg, kind) for kind in set(kinds)}
  for i, kind in enumerate(kinds):
    stack = p[f'layers_{kind}']
    for ours, theirs, fwd, _ in maps[kind]:
      sd[f'{prefix}layers.{i}.{theirs}'] = fwd(_get(stack, ours)[idx[i]])
  return {name: np.ascontiguousarray(a) for name, a in sd.items()}


def hf_state_dict_to_params(cfg: ModelConfig, get: Callable[[str], np.ndarray]) -> dict:
  """Our pure param dict (numpy) from HF arrays; get(name) returns the array of
  `name` (without prefix), raising a clear error when it is missing."""
  params: dict[str, Any] = {}

  def put(tree, path, value):
    name, _, comp = path.partition('#')
    *parents, leaf = name.split('/')
    for part in parents:
      tree = tree.setdefault(part, {})
    if comp:
      tree.setdefault(leaf, {})[int(comp)] = value
    else:
      tree[leaf] = value

  for ours, theirs, _, back in _top_maps(cfg):
    put(params, ours, back(get(theirs)))
  kinds = layer_kinds(cfg)
  for kind in dict.fromkeys(kinds):
    layers = [i for i, k in enumerate(kinds) if k == kind]
    stack: dict[str, Any] = {}
    for ours, theirs, _, back in _layer_maps(cfg, kind):
      put(stack, ours, np.stack([back(get(f'layers.{i}.{theirs}')) for i in layers]))
    params[f'layers_{kind}'] = _join_components(stack)
  return params


def _join_components(tree):
  """{0: a, 1: b} leaves (split '#c' paths) -> np.stack([a, b], COMPONENT_AXIS)."""
  if isinstance(tree, dict) and tree and all(isinstance(k, int) for k in tree):
    return np.stack([tree[c] for c in sorted(tree)], axis=COMPONENT_AXIS)
  if isinstance(tree, dict):
    return {k: _join_components(v) for k, v in tree.items()}
  return tree


def unused_hf_key(cfg: ModelConfig, name: str) -> bool:
  """True for weights transformers also ignores: k/v of KV-shared layers."""
  if cfg.architecture != 'gemma4' or not name.startswith('layers.'):
    return False
  layer, _, rest = name[len('layers.'):].partition('.')
  shared = layer.isdigit() and layer_kinds(cfg)[int(layer)].endswith('_shared')
  return shared and rest.split('.')[:2] in (['self_attn', p] for p in
                                           ('k_proj', 'v_proj', 'k_norm', 'v_norm'))


def check_shapes(cfg: ModelConfig, params: Mapping) -> None:
  """Raises naming the first of our parameters whose imported shape is wrong."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from score_jax.models.gemma4 import Gemma4Transformer  # pylint: disable=g-import-not-at-top
  abstract = nnx.state(nnx.eval_shape(lambda: Gemma4Transformer(cfg, rngs=nnx.Rngs(0))),
                       nnx.Param).to_pure_dict()
  want = dict(jax.tree_util.tree_flatten_with_path(abstract)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for path, a in want.items():
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    if path not in got:
      raise ValueError(f'hf_state_dict_to_params: {name} missing for config {cfg.name!r}')
    if tuple(got[path].shape) != tuple(a.shape):
      raise ValueError(f'hf_state_dict_to_params: {name} has shape {tuple(got[path].shape)}; '
                       f'expected {tuple(a.shape)} for config {cfg.name!r}')
