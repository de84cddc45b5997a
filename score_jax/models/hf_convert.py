"""Conversion between our Gemma parameters and Hugging Face transformers' layout.

Three functions, shared by the parity tests and the safetensors import/export:

  hf_config(cfg)                      -> transformers GemmaConfig / Gemma2Config /
                                         Gemma3TextConfig describing the same model.
  params_to_hf_state_dict(cfg, state) -> {'model.layers.0.self_attn.q_proj.weight': np, ...}
  hf_state_dict_to_params(cfg, sd)    -> pure nested dict for nnx.replace_by_pure_dict.

Which HF architecture a config maps to follows from its fields (qk-norm: Gemma 3;
post-norms: Gemma 2; neither: Gemma 1); a config that no HF class can express
(e.g. Gemma 1 with a sliding window) raises ValueError naming the field.

Layout, per layer l (HF torch Linear weights are (out, in)):
  q_einsum/w[l]      (D, N, H) <-> self_attn.q_proj.weight  (N*H, D)
  kv_einsum/w[l, :, 0] (D, K, H) <-> self_attn.k_proj.weight (K*H, D); [l, :, 1]: v_proj
  qkv_einsum/w[l]    (D, 3, N, H) (when N == K) <-> q_proj, k_proj, v_proj
  attn_vec_einsum/w[l] (N, H, D) <-> self_attn.o_proj.weight (D, N*H)
  gating_einsum[l]   (D, 2, F)  <-> mlp.gate_proj.weight [:, 0], mlp.up_proj.weight [:, 1] (F, D)
  linear[l]          (F, D)     <-> mlp.down_proj.weight (D, F)
  norms: scale <-> weight (both are the `s` of x * (1 + s)). Gemma 1 calls its
  pre-MLP norm `post_attention_layernorm`; Gemma 2/3 use that name for the norm
  after attention and call the pre-MLP one `pre_feedforward_layernorm`.
The output head is tied to the embedding: lm_head.weight is not emitted and, if
present on import, must equal model.embed_tokens.weight.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax.models import gemma4_convert
from score_jax.models.config import AttentionType, ModelConfig

_ROTARY_BUFFERS = ('rotary_emb.', 'embed_scale')


def hf_model_type(cfg: ModelConfig) -> str:
  """'gemma', 'gemma2', 'gemma3_text' or 'gemma4_text': the HF architecture of `cfg`."""
  if cfg.architecture == 'gemma4':
    return 'gemma4_text'
  if cfg.use_qk_norm:
    kind = 'gemma3_text'
  elif cfg.use_post_attn_norm or cfg.use_post_ffw_norm:
    kind = 'gemma2'
  else:
    kind = 'gemma'
  problems = []
  if kind != 'gemma' and not (cfg.use_post_attn_norm and cfg.use_post_ffw_norm):
    problems.append('use_post_attn_norm and use_post_ffw_norm must both be True')
  if kind == 'gemma':
    if any(t != AttentionType.GLOBAL for t in cfg.attention_types):
      problems.append('attention_pattern must be all GLOBAL (no sliding window)')
    if cfg.attn_logits_softcap is not None or cfg.final_logit_softcap is not None:
      problems.append('attn_logits_softcap/final_logit_softcap must be None')
    if cfg.query_pre_attn_scalar not in (None, cfg.head_dim):
      problems.append(f'query_pre_attn_scalar must be head_dim={cfg.head_dim}')
  if kind != 'gemma3_text':
    has_local = AttentionType.LOCAL_SLIDING in cfg.attention_types
    if cfg.rope_scale_global != 1.0:
      problems.append('rope_scale_global must be 1 (per-layer RoPE needs Gemma 3)')
    if has_local and cfg.rope_base_local != cfg.rope_base_global:
      problems.append('rope_base_local must equal rope_base_global (needs Gemma 3)')
  if problems:
    raise ValueError(f'hf_convert: config {cfg.name!r} maps to HF {kind!r} but: '
                     + '; '.join(problems))
  return kind


def hf_config(cfg: ModelConfig, **overrides: Any):
  """The transformers config of the same model (overrides: e.g. attn_implementation)."""
  import transformers  # pylint: disable=g-import-not-at-top  (test/export-only dependency)
  kind = hf_model_type(cfg)
  if kind == 'gemma4_text':
    return gemma4_convert.hf_config(cfg, **overrides)
  layer_types = ['sliding_attention' if t == AttentionType.LOCAL_SLIDING
                 else 'full_attention' for t in cfg.attention_types]
  kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim,
            intermediate_size=cfg.hidden_dim, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=True,
            attention_bias=False)
  if kind == 'gemma':
    kw.update(hidden_act='gelu_pytorch_tanh',
              rope_parameters={'rope_type': 'default', 'rope_theta': cfg.rope_base_global})
    cls = transformers.GemmaConfig
  else:
    kw.update(hidden_activation='gelu_pytorch_tanh', layer_types=layer_types,
              sliding_window=cfg.sliding_window,
              query_pre_attn_scalar=cfg.query_pre_attn_scalar or cfg.head_dim,
              attn_logit_softcapping=cfg.attn_logits_softcap,
              final_logit_softcapping=cfg.final_logit_softcap)
    if kind == 'gemma2':
      kw['rope_parameters'] = {'rope_type': 'default', 'rope_theta': cfg.rope_base_global}
      cls = transformers.Gemma2Config
    else:
      full = {'rope_type': 'default', 'rope_theta': cfg.rope_base_global}
      if cfg.rope_scale_global != 1.0:
        full = {'rope_type': 'linear', 'rope_theta': cfg.rope_base_global,
                'factor': float(cfg.rope_scale_global)}
      kw['rope_parameters'] = {
          'full_attention': full,
          'sliding_attention': {'rope_type': 'default', 'rope_theta': cfg.rope_base_local}}
      cls = transformers.Gemma3TextConfig
  kw.update(overrides)
  return cls(**kw)


def _norm_names(cfg: ModelConfig) -> dict[str, str]:
  """Our per-layer norm -> HF module name under model.layers.{i}."""
  if hf_model_type(cfg) == 'gemma':
    return {'pre_attention_norm': 'input_layernorm',
            'pre_ffw_norm': 'post_attention_layernorm'}
  names = {'pre_attention_norm': 'input_layernorm',
           'post_attention_norm': 'post_attention_layernorm',
           'pre_ffw_norm': 'pre_feedforward_layernorm',
           'post_ffw_norm': 'post_feedforward_layernorm'}
  if cfg.use_qk_norm:
    names.update({'attn/_query_norm': 'self_attn.q_norm',
                  'attn/_key_norm': 'self_attn.k_norm'})
  return names


def _to_numpy(x) -> np.ndarray:
  """np.ndarray from numpy, jax or torch (bfloat16 kept exact via ml_dtypes)."""
  if type(x).__module__.startswith('torch'):
    x = x.detach().cpu()
    if str(x.dtype) == 'torch.bfloat16':
      import ml_dtypes  # pylint: disable=g-import-not-at-top
      import torch  # pylint: disable=g-import-not-at-top
      return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return x.numpy()
  return np.asarray(x)


def _pure(state) -> dict:
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  if isinstance(state, nnx.State):
    state = state.to_pure_dict()
  return state


def params_to_hf_state_dict(cfg: ModelConfig, state, prefix: str = 'model.'
                            ) -> dict[str, np.ndarray]:
  """HF-named numpy arrays (dtype kept) from our params: a Transformer, its
  nnx.State, or the pure dict of it. lm_head.weight is omitted (tied)."""
  p = jax.tree.map(_to_numpy, _pure(state))
  if cfg.architecture == 'gemma4':
    return gemma4_convert.params_to_hf_state_dict(cfg, p, prefix)
  lay, attn = p['layers'], p['layers']['attn']
  n, k, d, h = cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim
  if 'qkv_einsum' in attn:
    q_LDNH, k_LDKH, v_LDKH = (attn['qkv_einsum']['w'][:, :, c] for c in range(3))
  else:
    q_LDNH = attn['q_einsum']['w']
    k_LDKH, v_LDKH = attn['kv_einsum']['w'][:, :, 0], attn['kv_einsum']['w'][:, :, 1]
  sd = {f'{prefix}embed_tokens.weight': p['embedder']['input_embedding'],
        f'{prefix}norm.weight': p['final_norm']['scale']}
  for i in range(cfg.num_layers):
    pre = f'{prefix}layers.{i}.'
    sd[pre + 'self_attn.q_proj.weight'] = q_LDNH[i].reshape(d, n * h).T
    sd[pre + 'self_attn.k_proj.weight'] = k_LDKH[i].reshape(d, k * h).T
    sd[pre + 'self_attn.v_proj.weight'] = v_LDKH[i].reshape(d, k * h).T
    sd[pre + 'self_attn.o_proj.weight'] = attn['attn_vec_einsum']['w'][i].reshape(n * h, d).T
    sd[pre + 'mlp.gate_proj.weight'] = lay['mlp']['gating_einsum'][i, :, 0].T
    sd[pre + 'mlp.up_proj.weight'] = lay['mlp']['gating_einsum'][i, :, 1].T
    sd[pre + 'mlp.down_proj.weight'] = lay['mlp']['linear'][i].T
    for ours, theirs in _norm_names(cfg).items():
      node = lay
      for part in ours.split('/'):
        node = node[part]
      sd[pre + theirs + '.weight'] = node['scale'][i]
  return {name: np.ascontiguousarray(a) for name, a in sd.items()}


def hf_state_dict_to_params(cfg: ModelConfig, sd: Mapping[str, Any],
                            prefix: str = 'model.', strict: bool = True) -> dict:
  """Our pure param dict (cfg.param_dtype) from an HF state dict (torch or numpy
  values). Apply with nnx.replace_by_pure_dict(state, params); nnx.update(model, state).

  strict: unknown keys under `prefix` (other than RoPE buffers) raise.
  """
  n, k, d, h, f = (cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim,
                   cfg.hidden_dim)
  used = set()

  def get(name, shape=None):
    key = prefix + name
    if key not in sd:
      raise ValueError(f'hf_state_dict_to_params: key {key!r} missing for config '
                       f'{cfg.name!r}' + (f' (expected shape {shape})' if shape else ''))
    a = _to_numpy(sd[key])
    if shape is not None and tuple(a.shape) != tuple(shape):
      raise ValueError(f'hf_state_dict_to_params: {key!r} has shape {tuple(a.shape)}; '
                       f'expected {tuple(shape)} for config {cfg.name!r}')
    used.add(key)
    return a

  if cfg.architecture == 'gemma4':
    params = gemma4_convert.hf_state_dict_to_params(cfg, get)
    return _check_and_cast(cfg, sd, prefix, params, used, strict)

  def per_layer(name, shape, fn=lambda a: a):
    return np.stack([fn(get(f'layers.{i}.{name}', shape)) for i in range(cfg.num_layers)])

  heads = lambda m: lambda a: a.T.reshape(d, m, h)  # (m*H, D) -> (D, m, H)
  q_LDNH = per_layer('self_attn.q_proj.weight', (n * h, d), heads(n))
  k_LDKH = per_layer('self_attn.k_proj.weight', (k * h, d), heads(k))
  v_LDKH = per_layer('self_attn.v_proj.weight', (k * h, d), heads(k))
  attn = {'attn_vec_einsum': {'w': per_layer('self_attn.o_proj.weight', (d, n * h),
                                             lambda a: a.T.reshape(n, h, d))}}
  if n == k:
    attn['qkv_einsum'] = {'w': np.stack([q_LDNH, k_LDKH, v_LDKH], axis=2)}
  else:
    attn['q_einsum'] = {'w': q_LDNH}
    attn['kv_einsum'] = {'w': np.stack([k_LDKH, v_LDKH], axis=2)}
  gate_LDF = per_layer('mlp.gate_proj.weight', (f, d), np.transpose)
  up_LDF = per_layer('mlp.up_proj.weight', (f, d), np.transpose)
  layers = {'attn': attn,
            'mlp': {'gating_einsum': np.stack([gate_LDF, up_LDF], axis=2),
                    'linear': per_layer('mlp.down_proj.weight', (d, f), np.transpose)}}
  for ours, theirs in _norm_names(cfg).items():
    dim = h if ours.startswith('attn/') else d
    node = layers
    *parents, leaf = ours.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = {'scale': per_layer(theirs + '.weight', (dim,))}
  params = {'embedder': {'input_embedding': get('embed_tokens.weight', (cfg.vocab_size, d))},
            'final_norm': {'scale': get('norm.weight', (d,))},
            'layers': layers}
  return _check_and_cast(cfg, sd, prefix, params, used, strict)


def _check_and_cast(cfg: ModelConfig, sd: Mapping[str, Any], prefix: str, params: dict,
                    used: set[str], strict: bool) -> dict:
  """Tied head, unknown keys (strict) and, for Gemma 4, shapes; then cast."""
  embed_VD = params['embedder']['input_embedding']
  head = sd.get('lm_head.weight')
  if head is not None and not np.array_equal(_to_numpy(head), embed_VD):
    raise ValueError('hf_state_dict_to_params: lm_head.weight differs from '
                     'embed_tokens.weight; Gemma ties them and so do we')
  if strict:
    extra = [key for key in sd if key.startswith(prefix) and key not in used
             and not any(b in key for b in _ROTARY_BUFFERS)
             and not gemma4_convert.unused_hf_key(cfg, key[len(prefix):])]
    if extra:
      raise ValueError(f'hf_state_dict_to_params: unexpected keys for config {cfg.name!r}: '
                       f'{sorted(extra)[:8]}{" ..." if len(extra) > 8 else ""}')
  if cfg.architecture == 'gemma4':
    gemma4_convert.check_shapes(cfg, params)
  return jax.tree.map(lambda a: jnp.asarray(a, cfg.jnp_param_dtype), params)
