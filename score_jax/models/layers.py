"""Gemma building blocks in Flax NNX: RMSNorm, embedder, RoPE, attention, GeGLU MLP.

Parameter names follow the published Gemma Flax checkpoints (embedder/input_embedding,
attn/q_einsum/w, attn/kv_einsum/w or attn/qkv_einsum/w, attn/attn_vec_einsum/w,
mlp/gating_einsum, mlp/linear, */scale), so importing a checkpoint is a mapping.
Shapes differ on purpose: every projection is stored (input dims, output dims), so
it runs as ONE plain (in, out) matmul on a bitcast of the weight and no compiled
step transposes or copies a weight (XLA:CPU copies a weight whose contracting or
free dims are not contiguous, on every call). Per layer (the stack adds L first):

  q_einsum/w       (D, N, H)     published (N, D, H)
  kv_einsum/w      (D, 2, K, H)  published (2, K, D, H)
  qkv_einsum/w     (D, 3, N, H)  published (3, N, D, H)   (when N == K)
  attn_vec_einsum/w (N, H, D)    as published
  gating_einsum    (D, 2, F)     published (2, D, F) Gemma 1, (2, F, D) Gemma 2/3
  linear           (F, D)        as published

`published_to_stored` gives the permutation; the importers and exporters use it.
Gemma 4's Attention4 (gemma4_layers.py) stores the same way (its k == v layers'
k_einsum/w is (D, K, H)), so LoRA and the sharding rules read one layout.
Every parameter carries `logical_axes` metadata (embed, heads, kv_heads, head_dim,
mlp, vocab; layers is added by stacking), read by score_jax.training.sharding.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from score_jax.models.config import ModelConfig

# Added to masked attention logits; finite so fully-masked rows (padding queries)
# give a uniform distribution instead of NaN.
_MASK_VALUE = -2.3819763e38

# Published Gemma Flax layout -> ours: stored = published.transpose(perm).
_PUBLISHED_TO_STORED = {
    'attn/q_einsum/w': (1, 0, 2),
    'attn/kv_einsum/w': (2, 0, 1, 3),
    'attn/qkv_einsum/w': (2, 0, 1, 3),
}


def published_to_stored(path: str, generation: int) -> tuple[int, ...] | None:
  """Axis permutation from the published layout of one layer's `path` to ours.

  path: e.g. 'attn/q_einsum/w' or 'mlp/gating_einsum' (no 'layers/', no layer
  axis); generation: 1, 2 or 3. None: stored as published.
  """
  if path == 'mlp/gating_einsum':
    return (1, 0, 2) if generation == 1 else (2, 0, 1)
  return _PUBLISHED_TO_STORED.get(path)


def _param(rngs: nnx.Rngs, init, shape: Sequence[int], dtype, axes: Sequence[str | None]):
  assert len(shape) == len(axes), (shape, axes)
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(axes))


def _fan_in_init(in_axes: Sequence[int]):
  """Normal(0, 1/fan_in) over the given input axes (LeCun normal)."""
  def init(key, shape, dtype):
    fan_in = 1
    for a in in_axes:
      fan_in *= shape[a]
    return (jax.random.normal(key, shape, jnp.float32) * fan_in ** -0.5).astype(dtype)
  return init


def _zeros(key, shape, dtype):
  del key
  return jnp.zeros(shape, dtype)


def project(x_BTI: jax.Array, w: jax.Array, num_in: int = 1) -> jax.Array:
  """x's last num_in dims contracted with w's first num_in: one 2-D matmul.

  Weights are stored (input dims, output dims), so flattening both sides is a
  bitcast and XLA uses the weight in place (see the module docstring).
  """
  b, t = x_BTI.shape[:2]
  in_shape, out_shape = w.shape[:num_in], w.shape[num_in:]
  assert x_BTI.shape[2:] == in_shape, (x_BTI.shape, w.shape)
  fan_in, fan_out = math.prod(in_shape), math.prod(out_shape)
  y_BTO = jnp.einsum('BTI,IO->BTO', x_BTI.reshape(b, t, fan_in),
                     w.astype(x_BTI.dtype).reshape(fan_in, fan_out))
  return y_BTO.reshape(b, t, *out_shape)


class Einsum(nnx.Module):
  """A bare weight `w`, applied by its owner's einsum (the published `*_einsum/w`)."""

  def __init__(self, rngs: nnx.Rngs, init, shape, dtype, axes):
    self.w = _param(rngs, init, shape, dtype, axes)


class RMSNorm(nnx.Module):
  """RMSNorm with Gemma's (1 + scale) parameterisation, computed in float32."""

  def __init__(self, dim: int, axis_name: str, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.scale = _param(rngs, _zeros, (dim,), cfg.jnp_param_dtype, (axis_name,))
    self.eps = cfg.norm_eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(var + self.eps)
    return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


class Embedder(nnx.Module):
  """Token embedding, scaled by sqrt(D) on the way in and tied to the output."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    # Gemma's Flax init: normal with stddev 0.01 (logits start near uniform).
    init = lambda k, s, d: (0.01 * jax.random.normal(k, s, jnp.float32)).astype(d)
    self.input_embedding = _param(rngs, init, (cfg.vocab_size, cfg.embed_dim),
                                  cfg.jnp_param_dtype, ('vocab', 'embed'))
    self.embed_dim = cfg.embed_dim
    self.dtype = cfg.jnp_dtype

  def encode(self, tokens_BT: jax.Array) -> jax.Array:
    x_BTD = jnp.take(self.input_embedding[...], tokens_BT, axis=0).astype(self.dtype)
    # Gemma rounds the normaliser to the compute dtype before multiplying.
    return x_BTD * jnp.asarray(self.embed_dim ** 0.5, self.dtype)

  def decode(self, x_XD: jax.Array) -> jax.Array:
    """Logits over the vocabulary for any leading shape X."""
    return jnp.einsum('...D,VD->...V', x_XD, self.input_embedding[...].astype(self.dtype))


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, base: jax.Array | float,
               scale: jax.Array | float = 1.0) -> jax.Array:
  """Rotary embedding over the two halves of the head dim (Gemma's layout).

  `scale` divides positions (linear RoPE scaling, Gemma 3's global layers).
  `base` and `scale` may be traced scalars: layers in one scan differ in both.
  """
  h = x_BTNH.shape[-1]
  fraction = 2.0 * jnp.arange(h // 2, dtype=jnp.float32) / h
  timescale_h = jnp.asarray(base, jnp.float32) ** fraction
  pos_BT = positions_BT.astype(jnp.float32) / jnp.asarray(scale, jnp.float32)
  angle_BTh = pos_BT[..., None] / timescale_h
  sin_BT1h = jnp.sin(angle_BTh)[:, :, None, :]
  cos_BT1h = jnp.cos(angle_BTh)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_BT1h - x2 * sin_BT1h, x2 * cos_BT1h + x1 * sin_BT1h], -1)
  return out.astype(x_BTNH.dtype)


class Attention(nnx.Module):
  """Multi-head / grouped-query / multi-query attention with an optional KV cache."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    n, k, d, h = cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim
    pdt = cfg.jnp_param_dtype
    self.cfg = cfg
    if n == k:  # published MHA checkpoints fuse q, k and v
      self.qkv_einsum = Einsum(rngs, _fan_in_init([0]), (d, 3, n, h), pdt,
                               ('embed', None, 'heads', 'head_dim'))
    else:
      self.q_einsum = Einsum(rngs, _fan_in_init([0]), (d, n, h), pdt,
                             ('embed', 'heads', 'head_dim'))
      self.kv_einsum = Einsum(rngs, _fan_in_init([0]), (d, 2, k, h), pdt,
                              ('embed', None, 'kv_heads', 'head_dim'))
    self.attn_vec_einsum = Einsum(rngs, _fan_in_init([0, 1]), (n, h, d), pdt,
                                  ('heads', 'head_dim', 'embed'))
    if cfg.use_qk_norm:
      self._query_norm = RMSNorm(h, 'head_dim', cfg, rngs=rngs)
      self._key_norm = RMSNorm(h, 'head_dim', cfg, rngs=rngs)

  def _project_qkv(self, x_BTD):
    if self.cfg.num_heads == self.cfg.num_kv_heads:
      qkv_BTCNH = project(x_BTD, self.qkv_einsum.w[...])
      return qkv_BTCNH[:, :, 0], qkv_BTCNH[:, :, 1], qkv_BTCNH[:, :, 2]
    kv_BTCKH = project(x_BTD, self.kv_einsum.w[...])
    return project(x_BTD, self.q_einsum.w[...]), kv_BTCKH[:, :, 0], kv_BTCKH[:, :, 1]

  def __call__(self, x_BTD, positions_BT, mask_BTS, rope_base, rope_scale,
               cache_kv=None, cache_index=None):
    """Returns (out_BTD, new_kv, full_kv): new_kv = (k_XTH, v_XHT), the new
    tokens' keys and values; full_kv = (k_XSH, v_XHS), those attended to.

    mask_BTS: which key slots each query may see (causal, padding and, for local
    layers, the sliding window already folded in by the caller). With a cache
    (this layer's (k_XSH, v_XHS)), queries attend over it with new_kv written
    at slots [cache_index, cache_index + T): full_kv is the updated cache. The
    caller keeps it (a decode step, in place) or writes new_kv itself (a scanned
    forward, which must not stack every layer's whole cache).
    """
    cfg = self.cfg
    q_BTNH, k_BTKH, v_BTKH = self._project_qkv(x_BTD)
    if cfg.use_qk_norm:
      q_BTNH = self._query_norm(q_BTNH)
      k_BTKH = self._key_norm(k_BTKH)
    q_BTNH = apply_rope(q_BTNH, positions_BT, rope_base, rope_scale)
    k_BTKH = apply_rope(k_BTKH, positions_BT, rope_base, rope_scale)
    q_BTNH = q_BTNH * jnp.asarray(cfg.query_scale, q_BTNH.dtype)

    # The cache's layout (models.transformer.KVCache): rows X = B x K, keys
    # [X, S, H], values [X, H, S], so both matmuls are 3-D with the contracted
    # dim last, the operand layout XLA:CPU reads in place. A one-row cache has
    # no X dim; then so has everything below ('...' in the einsums).
    b, t, n, h = q_BTNH.shape
    kh, g = cfg.num_kv_heads, n // cfg.num_kv_heads
    # M = T x G: each KV head's queries.
    q_XMH = q_BTNH.reshape(b, t, kh, g, h).swapaxes(1, 2).reshape(b * kh, t * g, h)
    k_XTH = k_BTKH.swapaxes(1, 2).reshape(b * kh, t, h)
    v_XHT = v_BTKH.transpose(0, 2, 3, 1).reshape(b * kh, h, t)
    if cache_kv is None:
      k_XSH, v_XHS = k_XTH, v_XHT
    else:
      ck_XSH, cv_XHS = cache_kv
      rows = (0,) * (ck_XSH.ndim - 2)
      if not rows:
        q_XMH, k_XTH, v_XHT = q_XMH[0], k_XTH[0], v_XHT[0]
      k_XTH, v_XHT = k_XTH.astype(ck_XSH.dtype), v_XHT.astype(cv_XHS.dtype)
      k_XSH = jax.lax.dynamic_update_slice(ck_XSH, k_XTH, rows + (cache_index, 0))
      v_XHS = jax.lax.dynamic_update_slice(cv_XHS, v_XHT, rows + (0, cache_index))

    logits_XMS = jnp.einsum('...MH,...SH->...MS', q_XMH, k_XSH.astype(q_BTNH.dtype))
    logits_BKTGS = logits_XMS.astype(jnp.float32).reshape(b, kh, t, g, -1)
    if cfg.attn_logits_softcap is not None:
      cap = cfg.attn_logits_softcap
      logits_BKTGS = jnp.tanh(logits_BKTGS / cap) * cap
    logits_BKTGS = jnp.where(mask_BTS[:, None, :, None, :], logits_BKTGS, _MASK_VALUE)
    probs_XMS = jax.nn.softmax(logits_BKTGS, axis=-1).astype(x_BTD.dtype).reshape(
        logits_XMS.shape)
    enc_XMH = jnp.einsum('...MS,...HS->...MH', probs_XMS, v_XHS.astype(x_BTD.dtype))
    enc_BTNH = enc_XMH.reshape(b, kh, t, g, h).swapaxes(1, 2).reshape(b, t, n, h)
    out_BTD = project(enc_BTNH, self.attn_vec_einsum.w[...], 2)
    return out_BTD, (k_XTH, v_XHT), (k_XSH, v_XHS)


class FeedForward(nnx.Module):
  """GeGLU: linear(gelu_tanh(x W_gate) * (x W_up))."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, f, pdt = cfg.embed_dim, cfg.hidden_dim, cfg.jnp_param_dtype
    self.gating_einsum = _param(rngs, _fan_in_init([0]), (d, 2, f), pdt,
                                ('embed', None, 'mlp'))
    self.linear = _param(rngs, _fan_in_init([0]), (f, d), pdt, ('mlp', 'embed'))

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    gate_up_BTCF = project(x_BTD, self.gating_einsum[...])
    act_BTF = (jax.nn.gelu(gate_up_BTCF[:, :, 0], approximate=True)
               * gate_up_BTCF[:, :, 1])
    return project(act_BTF, self.linear[...])
