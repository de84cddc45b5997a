"""Gemma 4 building blocks in Flax NNX: norms, attention, MoE and the decoder layer.

Where Gemma 4 means the same thing as Gemma 1-3 the blocks of layers.py are reused
(the GeGLU MLP, the weight helpers); what differs lives here:
  * RMSNorm multiplies by `scale` itself (initialised to 1), not by (1 + scale), and
    v-norm and the router's norm have no scale at all;
  * attention scales queries by 1 (q/k-norm set the scale), has no logit soft-cap,
    and a global layer may have its own head_dim and kv-head count, take the value
    from the key projection (k == v) and rotate only a fraction of the head dim;
  * KV-shared layers own no k/v weights: they attend over the K/V of an earlier
    layer of the same type (passed in as `shared_kv`);
  * a mixture of experts runs beside the dense MLP (26B-A4B), and a gated per-layer
    input (PLE) and a per-layer scalar close each layer (E2B/E4B).
Layer kinds ('local', 'global', 'local_shared', 'global_shared') differ in shapes;
models/gemma4.py stacks each kind separately.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from score_jax.models.config import ModelConfig
from score_jax.models.layers import (_MASK_VALUE, Einsum, FeedForward, _fan_in_init, _param,
                                     project)

KINDS = ('local', 'global', 'local_shared', 'global_shared')


def _ones(key, shape, dtype):
  del key
  return jnp.ones(shape, dtype)


def rms_normalize(x: jax.Array, eps: float) -> jax.Array:
  """x / rms(x) over the last axis, in float32 (the unscaled part of every norm)."""
  x32 = x.astype(jnp.float32)
  return x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)


class ScaleNorm(nnx.Module):
  """Gemma 4's RMSNorm: normalize(x) * scale, scale initialised to 1."""

  def __init__(self, dim: int, axis_name: str | None, cfg: ModelConfig, *,
               rngs: nnx.Rngs):
    self.scale = _param(rngs, _ones, (dim,), cfg.jnp_param_dtype, (axis_name,))
    self.eps = cfg.norm_eps

  def __call__(self, x: jax.Array) -> jax.Array:
    normed = rms_normalize(x, self.eps) * self.scale[...].astype(jnp.float32)
    return normed.astype(x.dtype)


def layer_dims(cfg: ModelConfig, kind: str) -> tuple[int, int]:
  """(kv heads, head dim) of a layer of this kind."""
  if kind.startswith('global'):
    return (cfg.num_global_kv_heads or cfg.num_kv_heads,
            cfg.global_head_dim or cfg.head_dim)
  return cfg.num_kv_heads, cfg.head_dim


def apply_partial_rope(x_BTNH: jax.Array, positions_BT: jax.Array, base: float,
                       scale: float, fraction: float) -> jax.Array:
  """RoPE over the two halves of the head dim, rotating only the first
  int(fraction * H / 2) frequency pairs (Gemma 4's "proportional" RoPE; the
  frequencies keep the full-head-dim exponents). fraction=1 is plain RoPE."""
  h = x_BTNH.shape[-1]
  rotated = int(fraction * h // 2)
  inv_freq_h = 1.0 / (base ** (jnp.arange(0, 2 * rotated, 2, dtype=jnp.float32) / h))
  inv_freq_h = jnp.pad(inv_freq_h, (0, h // 2 - rotated)) / scale
  angle_BTh = positions_BT.astype(jnp.float32)[..., None] * inv_freq_h
  sin_BT1h = jnp.sin(angle_BTh)[:, :, None, :]
  cos_BT1h = jnp.cos(angle_BTh)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_BT1h - x2 * sin_BT1h, x2 * cos_BT1h + x1 * sin_BT1h], -1)
  return out.astype(x_BTNH.dtype)


def attend(q_BTNH, k_BSKH, v_BSKH, mask_BTS):
  """Softmax attention (no query scaling) of N query heads over K kv heads."""
  b, t, n, h = q_BTNH.shape
  kh = k_BSKH.shape[2]
  dt = q_BTNH.dtype
  q_BTKGH = q_BTNH.reshape(b, t, kh, n // kh, h)
  logits_BTKGS = jnp.einsum('BTKGH,BSKH->BTKGS', q_BTKGH, k_BSKH.astype(dt))
  logits_BTKGS = jnp.where(mask_BTS[:, :, None, None, :],
                           logits_BTKGS.astype(jnp.float32), _MASK_VALUE)
  probs_BTKGS = jax.nn.softmax(logits_BTKGS, axis=-1).astype(dt)
  enc_BTKGH = jnp.einsum('BTKGS,BSKH->BTKGH', probs_BTKGS, v_BSKH.astype(dt))
  return enc_BTKGH.reshape(b, t, n, h)


class Attention4(nnx.Module):
  """One Gemma 4 attention layer of the given kind."""

  def __init__(self, cfg: ModelConfig, kind: str, *, rngs: nnx.Rngs):
    n, d, pdt = cfg.num_heads, cfg.embed_dim, cfg.jnp_param_dtype
    k, h = layer_dims(cfg, kind)
    is_global = kind.startswith('global')
    self.shared = kind.endswith('_shared')
    self.k_eq_v = cfg.attention_k_eq_v and is_global
    self.rope = ((cfg.rope_base_global, cfg.rope_scale_global, cfg.rope_fraction_global)
                 if is_global else (cfg.rope_base_local, 1.0, 1.0))
    self.eps = cfg.norm_eps
    # (in, out) like layers.Attention: (D, N, H), (D, 2, K, H), (D, K, H).
    self.q_einsum = Einsum(rngs, _fan_in_init([0]), (d, n, h), pdt,
                           ('embed', 'heads', 'head_dim'))
    self.query_norm = ScaleNorm(h, 'head_dim', cfg, rngs=rngs)
    if not self.shared:
      if self.k_eq_v:
        self.k_einsum = Einsum(rngs, _fan_in_init([0]), (d, k, h), pdt,
                               ('embed', 'kv_heads', 'head_dim'))
      else:
        self.kv_einsum = Einsum(rngs, _fan_in_init([0]), (d, 2, k, h), pdt,
                                ('embed', None, 'kv_heads', 'head_dim'))
      self.key_norm = ScaleNorm(h, 'head_dim', cfg, rngs=rngs)
    self.attn_vec_einsum = Einsum(rngs, _fan_in_init([0, 1]), (n, h, d), pdt,
                                  ('heads', 'head_dim', 'embed'))

  def _new_kv(self, x_BTD, positions_BT):
    dt = x_BTD.dtype
    if self.k_eq_v:
      k_BTKH = v_BTKH = project(x_BTD, self.k_einsum.w[...])
    else:
      kv_BTCKH = project(x_BTD, self.kv_einsum.w[...])
      k_BTKH, v_BTKH = kv_BTCKH[:, :, 0], kv_BTCKH[:, :, 1]
    k_BTKH = apply_partial_rope(self.key_norm(k_BTKH), positions_BT, *self.rope)
    v_BTKH = rms_normalize(v_BTKH, self.eps).astype(dt)   # v-norm: no scale
    return k_BTKH, v_BTKH

  def __call__(self, x_BTD, positions_BT, mask_BTS, shared_kv=None, cache_kv=None,
               cache_index=None):
    """Returns (out_BTD, new_kv, full_kv).

    new_kv: this layer's K/V of the T new tokens (None for a shared layer), which
    the caller writes to the cache; full_kv: the K/V attended over (the cache
    with the new tokens at cache_index, or the new tokens alone), which a later
    KV-shared layer reuses. shared_kv: that full_kv of the producing layer.
    """
    dt = x_BTD.dtype
    q_BTNH = project(x_BTD, self.q_einsum.w[...])
    q_BTNH = apply_partial_rope(self.query_norm(q_BTNH), positions_BT, *self.rope)
    new_kv = None
    if self.shared:
      k_BSKH, v_BSKH = shared_kv
    else:
      new_kv = self._new_kv(x_BTD, positions_BT)
      k_BSKH, v_BSKH = new_kv
      if cache_kv is not None:
        start = (0, cache_index, 0, 0)
        k_BSKH = jax.lax.dynamic_update_slice(cache_kv[0], k_BSKH.astype(cache_kv[0].dtype),
                                              start)
        v_BSKH = jax.lax.dynamic_update_slice(cache_kv[1], v_BSKH.astype(cache_kv[1].dtype),
                                              start)
    enc_BTNH = attend(q_BTNH, k_BSKH, v_BSKH, mask_BTS)
    out_BTD = jnp.einsum('BTNH,NHD->BTD', enc_BTNH, self.attn_vec_einsum.w[...].astype(dt))
    return out_BTD, new_kv, (k_BSKH, v_BSKH)


class MoE(nnx.Module):
  """Top-k routed GeGLU experts; dropless: every token reaches all its k experts.

  Tokens are sorted by expert and each expert multiplies its contiguous rows
  (jax.lax.ragged_dot), so no capacity limit drops tokens and the result is
  deterministic; the k outputs of a token are summed in a fixed order.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, e, f, pdt = cfg.embed_dim, cfg.num_experts, cfg.expert_hidden_dim, cfg.jnp_param_dtype
    self.router_scale = _param(rngs, _ones, (d,), pdt, ('embed',))
    self.router = _param(rngs, _fan_in_init([0]), (d, e), pdt, ('embed', 'expert'))
    self.per_expert_scale = _param(rngs, _ones, (e,), pdt, ('expert',))
    self.gating_einsum = _param(rngs, _fan_in_init([2]), (e, 2, d, f), pdt,
                                ('expert', None, 'embed', 'mlp'))
    self.linear = _param(rngs, _fan_in_init([1]), (e, f, d), pdt, ('expert', 'mlp', 'embed'))
    self.top_k, self.eps = cfg.num_experts_per_token, cfg.norm_eps

  def route(self, x_XD):
    """(weights_XK, experts_XK) of flat tokens X, from the residual stream."""
    d = x_XD.shape[-1]
    h_XD = rms_normalize(x_XD, self.eps).astype(x_XD.dtype)
    h_XD = h_XD * self.router_scale[...].astype(x_XD.dtype) * jnp.asarray(d ** -0.5, x_XD.dtype)
    scores_XE = h_XD @ self.router[...].astype(x_XD.dtype)
    probs_XE = jax.nn.softmax(scores_XE.astype(jnp.float32), axis=-1)
    w_XK, idx_XK = jax.lax.top_k(probs_XE, self.top_k)
    w_XK = w_XK / jnp.sum(w_XK, axis=-1, keepdims=True)
    return w_XK * self.per_expert_scale[...].astype(jnp.float32)[idx_XK], idx_XK

  def __call__(self, resid_BTD, x_BTD):
    """Expert mixture of x_BTD (normed input), routed on resid_BTD."""
    b, t, d = x_BTD.shape
    dt = x_BTD.dtype
    w_XK, idx_XK = self.route(resid_BTD.reshape(b * t, d))
    k = idx_XK.shape[1]
    flat_M = idx_XK.reshape(-1)
    order_M = jnp.argsort(flat_M, stable=True)
    sizes_E = jnp.bincount(flat_M, length=self.router.shape[1]).astype(jnp.int32)
    x_MD = x_BTD.reshape(b * t, d)[order_M // k]
    gate_w, up_w = self.gating_einsum[...].astype(dt)[:, 0], self.gating_einsum[...].astype(dt)[:, 1]
    act_MF = (jax.nn.gelu(jax.lax.ragged_dot(x_MD, gate_w, sizes_E), approximate=True)
              * jax.lax.ragged_dot(x_MD, up_w, sizes_E))
    y_MD = jax.lax.ragged_dot(act_MF, self.linear[...].astype(dt), sizes_E)
    y_MD = y_MD * w_XK.reshape(-1)[order_M][:, None].astype(dt)
    inverse_M = jnp.zeros_like(order_M).at[order_M].set(jnp.arange(order_M.shape[0]))
    return y_MD[inverse_M].reshape(b, t, k, d).sum(axis=2)


class Block4(nnx.Module):
  """One Gemma 4 decoder layer of the given kind (see KINDS)."""

  def __init__(self, cfg: ModelConfig, kind: str, *, rngs: nnx.Rngs):
    d = cfg.embed_dim
    norm = lambda dim=d, axis='embed': ScaleNorm(dim, axis, cfg, rngs=rngs)
    self.pre_attention_norm, self.post_attention_norm = norm(), norm()
    self.attn = Attention4(cfg, kind, rngs=rngs)
    self.pre_ffw_norm, self.post_ffw_norm = norm(), norm()
    wide = cfg.use_double_wide_mlp and kind.endswith('_shared')
    self.mlp = FeedForward(cfg.replace(hidden_dim=cfg.hidden_dim * (2 if wide else 1)),
                           rngs=rngs)
    if cfg.num_experts:
      self.moe = MoE(cfg, rngs=rngs)
      self.post_ffw_norm_1, self.pre_ffw_norm_2, self.post_ffw_norm_2 = norm(), norm(), norm()
    if cfg.per_layer_input_dim:
      p, pdt = cfg.per_layer_input_dim, cfg.jnp_param_dtype
      self.per_layer_input_gate = _param(rngs, _fan_in_init([0]), (d, p), pdt,
                                         ('embed', None))
      self.per_layer_projection = _param(rngs, _fan_in_init([0]), (p, d), pdt,
                                         (None, 'embed'))
      self.post_per_layer_input_norm = norm()
    self.layer_scalar = _param(rngs, _ones, (1,), cfg.jnp_param_dtype, (None,))
    self.cfg = cfg

  def _ffw(self, x_BTD):
    h_BTD = self.mlp(self.pre_ffw_norm(x_BTD))
    if self.cfg.num_experts:
      moe_BTD = self.moe(x_BTD, self.pre_ffw_norm_2(x_BTD))
      h_BTD = self.post_ffw_norm_1(h_BTD) + self.post_ffw_norm_2(moe_BTD)
    return x_BTD + self.post_ffw_norm(h_BTD)

  def __call__(self, x_BTD, positions_BT, mask_BTS, per_layer_BTP=None, shared_kv=None,
               cache_kv=None, cache_index=None):
    """Returns (x_BTD, new_kv, full_kv); see Attention4."""
    h_BTD, new_kv, full_kv = self.attn(self.pre_attention_norm(x_BTD), positions_BT,
                                       mask_BTS, shared_kv, cache_kv, cache_index)
    x_BTD = self._ffw(x_BTD + self.post_attention_norm(h_BTD))
    if self.cfg.per_layer_input_dim:
      dt = x_BTD.dtype
      g_BTP = jax.nn.gelu(x_BTD @ self.per_layer_input_gate[...].astype(dt), approximate=True)
      g_BTD = (g_BTP * per_layer_BTP) @ self.per_layer_projection[...].astype(dt)
      x_BTD = x_BTD + self.post_per_layer_input_norm(g_BTD)
    return x_BTD * self.layer_scalar[...].astype(x_BTD.dtype), new_kv, full_kv
