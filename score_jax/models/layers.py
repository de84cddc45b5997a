"""Gemma building blocks in Flax NNX: RMSNorm, embedder, RoPE, attention, GeGLU MLP.

Parameter names and shapes follow the published Gemma Flax checkpoints
(embedder/input_embedding, attn/q_einsum/w, attn/kv_einsum/w or attn/qkv_einsum/w,
attn/attn_vec_einsum/w, mlp/gating_einsum, mlp/linear, */scale), so importing a
checkpoint is a mapping. The one deliberate difference: mlp/gating_einsum is stored
as (2, D, F) for every generation (Gemma 1's layout); Gemma 2/3 publish (2, F, D)
and the importer transposes.

Every parameter carries `logical_axes` metadata (embed, heads, kv_heads, head_dim,
mlp, vocab; layers is added by stacking), read by score_jax.training.sharding.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from score_jax.models.config import ModelConfig

# Added to masked attention logits; finite so fully-masked rows (padding queries)
# give a uniform distribution instead of NaN.
_MASK_VALUE = -2.3819763e38


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
      self.qkv_einsum = Einsum(rngs, _fan_in_init([2]), (3, n, d, h), pdt,
                               (None, 'heads', 'embed', 'head_dim'))
    else:
      self.q_einsum = Einsum(rngs, _fan_in_init([1]), (n, d, h), pdt,
                             ('heads', 'embed', 'head_dim'))
      self.kv_einsum = Einsum(rngs, _fan_in_init([2]), (2, k, d, h), pdt,
                              (None, 'kv_heads', 'embed', 'head_dim'))
    self.attn_vec_einsum = Einsum(rngs, _fan_in_init([0, 1]), (n, h, d), pdt,
                                  ('heads', 'head_dim', 'embed'))
    if cfg.use_qk_norm:
      self._query_norm = RMSNorm(h, 'head_dim', cfg, rngs=rngs)
      self._key_norm = RMSNorm(h, 'head_dim', cfg, rngs=rngs)

  def _project_qkv(self, x_BTD):
    dt = x_BTD.dtype
    if self.cfg.num_heads == self.cfg.num_kv_heads:
      q, k, v = jnp.einsum('BTD,CNDH->CBTNH', x_BTD, self.qkv_einsum.w[...].astype(dt))
      return q, k, v
    q_BTNH = jnp.einsum('BTD,NDH->BTNH', x_BTD, self.q_einsum.w[...].astype(dt))
    k_BTKH, v_BTKH = jnp.einsum('BTD,CKDH->CBTKH', x_BTD,
                                self.kv_einsum.w[...].astype(dt))
    return q_BTNH, k_BTKH, v_BTKH

  def __call__(self, x_BTD, positions_BT, mask_BTS, rope_base, rope_scale,
               cache_kv=None, cache_index=None):
    """Returns (out_BTD, (k_BTKH, v_BTKH)): the new tokens' keys and values.

    mask_BTS: which key slots each query may see (causal, padding and, for local
    layers, the sliding window already folded in by the caller). With a cache
    (this layer's (k_BSKH, v_BSKH)), queries attend over it with the new keys and
    values at slots [cache_index, cache_index + T); the caller stores them there
    (Transformer writes every layer's at once, so no layer re-emits its cache).
    """
    cfg = self.cfg
    q_BTNH, k_BTKH, v_BTKH = self._project_qkv(x_BTD)
    if cfg.use_qk_norm:
      q_BTNH = self._query_norm(q_BTNH)
      k_BTKH = self._key_norm(k_BTKH)
    q_BTNH = apply_rope(q_BTNH, positions_BT, rope_base, rope_scale)
    k_BTKH = apply_rope(k_BTKH, positions_BT, rope_base, rope_scale)
    q_BTNH = q_BTNH * jnp.asarray(cfg.query_scale, q_BTNH.dtype)

    if cache_kv is None:
      k_BSKH, v_BSKH = k_BTKH, v_BTKH
    else:
      ck_BSKH, cv_BSKH = cache_kv
      k_BTKH, v_BTKH = k_BTKH.astype(ck_BSKH.dtype), v_BTKH.astype(cv_BSKH.dtype)
      start = (0, cache_index, 0, 0)
      k_BSKH = jax.lax.dynamic_update_slice(ck_BSKH, k_BTKH, start)
      v_BSKH = jax.lax.dynamic_update_slice(cv_BSKH, v_BTKH, start)

    b, t, n, h = q_BTNH.shape
    kh = cfg.num_kv_heads
    q_BTKGH = q_BTNH.reshape(b, t, kh, n // kh, h)
    logits_BTKGS = jnp.einsum('BTKGH,BSKH->BTKGS', q_BTKGH, k_BSKH.astype(q_BTNH.dtype))
    logits_BTKGS = logits_BTKGS.astype(jnp.float32)
    if cfg.attn_logits_softcap is not None:
      cap = cfg.attn_logits_softcap
      logits_BTKGS = jnp.tanh(logits_BTKGS / cap) * cap
    logits_BTKGS = jnp.where(mask_BTS[:, :, None, None, :], logits_BTKGS, _MASK_VALUE)
    probs_BTKGS = jax.nn.softmax(logits_BTKGS, axis=-1).astype(x_BTD.dtype)
    enc_BTKGH = jnp.einsum('BTKGS,BSKH->BTKGH', probs_BTKGS, v_BSKH.astype(x_BTD.dtype))
    enc_BTNH = enc_BTKGH.reshape(b, t, n, h)
    out_BTD = jnp.einsum('BTNH,NHD->BTD', enc_BTNH,
                         self.attn_vec_einsum.w[...].astype(x_BTD.dtype))
    return out_BTD, (k_BTKH, v_BTKH)


class FeedForward(nnx.Module):
  """GeGLU: linear(gelu_tanh(x W_gate) * (x W_up))."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, f, pdt = cfg.embed_dim, cfg.hidden_dim, cfg.jnp_param_dtype
    self.gating_einsum = _param(rngs, _fan_in_init([1]), (2, d, f), pdt,
                                (None, 'embed', 'mlp'))
    self.linear = _param(rngs, _fan_in_init([0]), (f, d), pdt, ('mlp', 'embed'))

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    dt = x_BTD.dtype
    gate_BTF, up_BTF = jnp.einsum('BTD,CDF->CBTF', x_BTD,
                                  self.gating_einsum[...].astype(dt))
    act_BTF = jax.nn.gelu(gate_BTF, approximate=True) * up_BTF
    return jnp.einsum('BTF,FD->BTD', act_BTF, self.linear[...].astype(dt))
