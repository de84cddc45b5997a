"""The Gemma decoder: embed -> scanned stack of blocks -> final norm -> tied logits.

One module serves the full forward over a padded batch (training, scoring) and the
cached step (prefill and decode): with `cache` the new keys/values are written at
`cache_index` and queries attend over every cache slot that `attn_mask_BTS` allows.

The L blocks share one parameter tree whose leaves carry a leading `layers` axis;
they run under jax.lax.scan, so compile time does not grow with depth. Layers
differ only in data (local/global attention, RoPE base and scaling), which rides
along the scan as arrays.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from flax import struct

from score_jax import losses
from score_jax.models.config import AttentionType, ModelConfig
from score_jax.models.layers import Attention, Embedder, FeedForward, RMSNorm

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@struct.dataclass
class KVCache:
  """Keys/values of every layer for S slots, and the position held in each slot.

  One array per layer (tuples of L), rows X = B x K (batch-major), keys
  [X, S, H] and values [X, H, S]: a decode step writes its token into each
  layer's buffers in place and the attention matmuls read them as stored. A stacked [L, ...] cache would be
  sliced per layer (a copy of that layer's cache on every step), and another
  layout transposed for the matmuls (XLA:CPU copies it); tests/sampling/test_decode.py.
  With one row (B x K = 1) the X dim is left out: XLA:CPU drops it from the
  matmuls anyway and then updated a [1, ...] cache in two fusions, copying it.
  """
  k_XSH: tuple[jax.Array, ...]
  v_XHS: tuple[jax.Array, ...]
  pos_BS: jax.Array

  @property
  def num_slots(self) -> int:
    return self.pos_BS.shape[1]


def init_cache(cfg: ModelConfig, batch_size: int, num_slots: int, dtype=None) -> KVCache:
  if cfg.architecture == 'gemma4':  # per-kind stacks (models/gemma4.py)
    from score_jax.models import gemma4  # pylint: disable=g-import-not-at-top
    return gemma4.init_cache(cfg, batch_size, num_slots, dtype)
  b, k, s, h = batch_size, cfg.num_kv_heads, num_slots, cfg.head_dim
  dtype = dtype or cfg.jnp_dtype
  zeros = lambda *shape: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
  rows = (b * k,) if b * k > 1 else ()
  return KVCache(k_XSH=zeros(*rows, s, h), v_XHS=zeros(*rows, h, s),
                 pos_BS=jnp.zeros((batch_size, num_slots), jnp.int32))


def causal_mask(positions_BT: jax.Array, valid_BT: jax.Array) -> jax.Array:
  """(B, T, T) mask for a full forward: key valid and not after the query."""
  return (valid_BT[:, None, :]
          & (positions_BT[:, None, :] <= positions_BT[:, :, None]))


class Block(nnx.Module):
  """One decoder layer: pre-norm attention and GeGLU MLP, optional post-norms."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d = cfg.embed_dim
    self.pre_attention_norm = RMSNorm(d, 'embed', cfg, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    if cfg.use_post_attn_norm:
      self.post_attention_norm = RMSNorm(d, 'embed', cfg, rngs=rngs)
    self.pre_ffw_norm = RMSNorm(d, 'embed', cfg, rngs=rngs)
    self.mlp = FeedForward(cfg, rngs=rngs)
    if cfg.use_post_ffw_norm:
      self.post_ffw_norm = RMSNorm(d, 'embed', cfg, rngs=rngs)
    self.cfg = cfg

  def __call__(self, x_BTD, positions_BT, mask_BTS, rope_base, rope_scale,
               cache_kv=None, cache_index=None):
    h_BTD, new_kv, full_kv = self.attn(self.pre_attention_norm(x_BTD), positions_BT,
                                       mask_BTS, rope_base, rope_scale, cache_kv, cache_index)
    if self.cfg.use_post_attn_norm:
      h_BTD = self.post_attention_norm(h_BTD)
    x_BTD = x_BTD + h_BTD
    h_BTD = self.mlp(self.pre_ffw_norm(x_BTD))
    if self.cfg.use_post_ffw_norm:
      h_BTD = self.post_ffw_norm(h_BTD)
    return x_BTD + h_BTD, new_kv, full_kv


def stacked_blocks(make_block: Callable[[nnx.Rngs], nnx.Module], n: int,
                   rngs: nnx.Rngs) -> nnx.Module:
  """make_block(rngs) n times as one module whose every parameter has a leading
  axis of size n (logical 'layers'), each slice initialised from its own key."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: make_block(nnx.Rngs(0))))
  keys_n = jax.random.split(rngs.params(), n)
  state = jax.vmap(lambda k: nnx.state(make_block(nnx.Rngs(params=k))))(keys_n)
  block = nnx.merge(graphdef, state)
  for _, var in nnx.iter_graph(block):
    if isinstance(var, nnx.Variable):
      var.set_metadata(logical_axes=('layers',) + tuple(var.get_metadata()['logical_axes']))
  return block


class Transformer(nnx.Module):
  """Gemma causal LM. Parameters: embedder, layers (stacked), final_norm."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    if cfg.remat not in REMAT_POLICIES:
      raise ValueError(f'{cfg.name}: remat={cfg.remat!r}; expected one of '
                       + ', '.join(sorted(REMAT_POLICIES)))
    self.cfg = cfg
    self.embedder = Embedder(cfg, rngs=rngs)
    self.layers = stacked_blocks(lambda r: Block(cfg, rngs=r), cfg.num_layers, rngs)
    self.final_norm = RMSNorm(cfg.embed_dim, 'embed', cfg, rngs=rngs)

  def __call__(self, tokens_BT: jax.Array, positions_BT: jax.Array,
               attn_mask_BTS: jax.Array, cache: KVCache | None = None,
               cache_index: jax.Array | int | None = None,
               activation_sharding: jax.sharding.Sharding | None = None
               ) -> tuple[jax.Array, KVCache | None]:
    """Logits for every input token, and the updated cache (None without one).

    tokens_BT, positions_BT: int32. attn_mask_BTS: bool; S = T without a cache,
    S = cache.num_slots with one (the new tokens occupy slots cache_index..+T).
    The sliding window of local layers is applied here, from positions.
    activation_sharding: if given (see training.sharding.activation_sharding),
    x_BTD is constrained to it after the embedding and after every layer.
    """
    h_BTD, new_cache = self.hidden(tokens_BT, positions_BT, attn_mask_BTS, cache,
                                   cache_index, activation_sharding)
    return self.logits(h_BTD), new_cache

  def logits(self, h_XD: jax.Array) -> jax.Array:
    """Tied-embedding logits (soft-capped where the config says) of final hidden states."""
    logits_XV = self.embedder.decode(h_XD)
    if self.cfg.final_logit_softcap is not None:
      cap = self.cfg.final_logit_softcap
      logits_XV = jnp.tanh(logits_XV.astype(jnp.float32) / cap) * cap
    return logits_XV

  def unstack_layers(self) -> tuple[nnx.State, ...]:
    """Each layer's parameters as arrays of their own (static slices of the stack).

    For `hidden(layers=...)` inside a loop (the sampler's decode): taken once
    before the loop, every matmul then reads its weight buffer in place, where
    the scan's per-layer dynamic slice is a weight-sized copy on every step
    (XLA:CPU materialises it).
    """
    _, state = nnx.split(self.layers)
    return tuple(jax.tree.map(lambda x, l=l: x[l], state)
                 for l in range(self.cfg.num_layers))

  def hidden(self, tokens_BT: jax.Array, positions_BT: jax.Array,
             attn_mask_BTS: jax.Array, cache: KVCache | None = None,
             cache_index: jax.Array | int | None = None,
             activation_sharding: jax.sharding.Sharding | None = None,
             layers: tuple[nnx.State, ...] | None = None
             ) -> tuple[jax.Array, KVCache | None]:
    """Final-norm hidden states h_BTD (logits = self.logits(h_BTD)) and the cache.

    Same arguments as __call__. Callers that need only some positions' logits
    (the sampler) take them from h_BTD and never build the B x T x V tensor.
    layers: self.unstack_layers(), taken once outside a loop that calls this;
    the layer loop is then unrolled over them instead of scanned.
    """
    cfg = self.cfg
    constrain = lambda x: (x if activation_sharding is None else
                           jax.lax.with_sharding_constraint(x, activation_sharding))
    x_BTD = constrain(self.embedder.encode(tokens_BT))

    key_pos_BS = _key_positions(positions_BT, cache, cache_index)
    local_mask_BTS = _local_mask(cfg, positions_BT, key_pos_BS, attn_mask_BTS)
    is_local_L = jnp.array([t == AttentionType.LOCAL_SLIDING for t in cfg.attention_types])
    graphdef, layer_state = nnx.split(self.layers)

    def body(x_BTD, xs):
      state_l, is_local, kv = xs
      block = nnx.merge(graphdef, state_l)
      mask_BTS = jnp.where(is_local, local_mask_BTS, attn_mask_BTS)
      base = jnp.where(is_local, cfg.rope_base_local, cfg.rope_base_global)
      scale = jnp.where(is_local, 1.0, cfg.rope_scale_global)
      x_BTD, new_kv, full_kv = block(x_BTD, positions_BT, mask_BTS, base, scale, kv,
                                     cache_index)
      # Unrolled: this layer's updated cache, kept as is (in place). Scanned: only
      # the new tokens' K/V, as stacking every layer's whole cache would copy it.
      return constrain(x_BTD), (None if kv is None else full_kv if unrolled else new_kv)

    policy = REMAT_POLICIES[cfg.remat]
    if cfg.remat != 'none':
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    unrolled = layers is not None
    if unrolled:
      kv_in = None if cache is None else (cache.k_XSH, cache.v_XHS)
      x_BTD, kv_L = _unrolled(body, x_BTD, layers, is_local_L, kv_in)
      new_cache = None if cache is None else KVCache(
          k_XSH=tuple(k for k, _ in kv_L), v_XHS=tuple(v for _, v in kv_L),
          pos_BS=key_pos_BS)
    else:
      # Stacked once per call for the scan (prefill or a chunk, never a decode step).
      kv_in = None if cache is None else (jnp.stack(cache.k_XSH), jnp.stack(cache.v_XHS))
      # scan_layers=False unrolls the loop: same program per layer, compile time ~ L.
      x_BTD, kv_out = jax.lax.scan(body, x_BTD, (layer_state, is_local_L, kv_in),
                                   unroll=1 if cfg.scan_layers else cfg.num_layers)
      new_cache = (None if cache is None else
                   _write_cache(cache, kv_out, cache_index, key_pos_BS))
    return self.final_norm(x_BTD), new_cache


def _key_positions(positions_BT: jax.Array, cache: KVCache | None,
                   cache_index: jax.Array | int | None) -> jax.Array:
  """Positions of the keys attended to: the inputs', or the cache's slots with
  the new tokens' positions written at cache_index."""
  if cache is None:
    return positions_BT
  return jax.lax.dynamic_update_slice(
      cache.pos_BS, positions_BT.astype(cache.pos_BS.dtype), (0, cache_index))


def _local_mask(cfg: ModelConfig, positions_BT: jax.Array, key_pos_BS: jax.Array,
                attn_mask_BTS: jax.Array) -> jax.Array:
  """attn_mask_BTS restricted to the sliding window (local layers' mask)."""
  if not cfg.sliding_window:
    return attn_mask_BTS
  in_window = (positions_BT[:, :, None] - key_pos_BS[:, None, :]) < cfg.sliding_window
  return attn_mask_BTS & in_window


def _write_cache(cache: KVCache, kv_out: tuple[jax.Array, jax.Array],
                 cache_index: jax.Array | int, key_pos_BS: jax.Array) -> KVCache:
  """`cache` with the new tokens' K/V (kv_out: [L, X, T, H] keys, [L, X, H, T]
  values; no X for a one-row cache) written at slot cache_index of each layer,
  and the key positions."""
  rows = (0,) * (cache.k_XSH[0].ndim - 2)
  write = lambda c_L, new_L, start: tuple(
      jax.lax.dynamic_update_slice(c, new_L[l], rows + start) for l, c in enumerate(c_L))
  return KVCache(k_XSH=write(cache.k_XSH, kv_out[0], (cache_index, 0)),
                 v_XHS=write(cache.v_XHS, kv_out[1], (0, cache_index)),
                 pos_BS=key_pos_BS)


def _unrolled(body, x_BTD, layers, is_local_L, kv_in):
  """jax.lax.scan(body, ...) as a Python loop over per-layer states and caches;
  the per-layer outputs as a list (unstacked)."""
  outs = []
  for l, state_l in enumerate(layers):
    kv = None if kv_in is None else (kv_in[0][l], kv_in[1][l])
    x_BTD, out = body(x_BTD, (state_l, is_local_L[l], kv))
    outs.append(out)
  return x_BTD, outs


# Elements of one slice's float32 logits when scoring many positions (256 MiB).
# A loss keeps a few such arrays alive (policy, reference, their log-softmaxes);
# slices of fewer rows than this would underuse a TPU's matrix units.
MAX_LOGITS = 1 << 26


def map_position_chunks(fn: Callable[..., Any], xs: tuple[jax.Array, ...], *,
                        vocab_size: int, max_logits: int = MAX_LOGITS,
                        remat: bool = False) -> Any:
  """fn over slices of positions of the (B, T, ...) arrays xs, joined back along T.

  Each slice holds as many positions as keep B x positions x vocab_size under
  max_logits (static), so fn may build that slice's logits; fn maps arrays of
  shape (B, C, ...) to a pytree of (B, C) arrays. One slice means one plain call.
  remat: with several slices, recompute each in the backward pass instead of
  saving its logits (with one slice they fit the budget and are kept).
  """
  b, t = xs[0].shape[:2]
  chunk = max(1, max_logits // (b * vocab_size))
  if t <= chunk:
    return fn(*xs)
  n = -(-t // chunk)
  fn = jax.checkpoint(fn) if remat else fn

  def split(x):  # (B, T, ...) -> (N, B, C, ...), padded at the end of T
    x = jnp.pad(x, [(0, 0), (0, n * chunk - t)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)

  out = jax.lax.map(lambda args: fn(*args), tuple(split(x) for x in xs))
  return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(b, n * chunk)[:, :t], out)


def token_stats(model: Transformer, h_BXD: jax.Array, targets_BX: jax.Array,
                ref_model: Transformer | None = None, ref_h_BXD: jax.Array | None = None,
                *, exact_kl: bool = False, max_logits: int = MAX_LOGITS,
                remat: bool = False) -> dict[str, jax.Array]:
  """Log-probs of targets_BX under the logits of h_BXD (same positions), float32.

  The one log-prob path from hidden states: {'logp'}, with a reference also
  'ref_logp' (no gradient) and, if exact_kl, 'kl' = KL(pi || pi_ref) over the
  vocabulary. Never builds all B x X x V logits (see map_position_chunks): with
  Gemma 3's 262k vocabulary a 512-token prefill of 32 rows would hold 16 GiB of
  them. remat recomputes each slice's logits in the backward pass.
  """
  def one(h_BCD, targets_BC, *ref):
    logits_BCV = model.logits(h_BCD)
    out = {'logp': losses.token_log_probs(logits_BCV, targets_BC)}
    if ref:
      ref_logits_BCV = jax.lax.stop_gradient(ref_model.logits(ref[0]))
      out['ref_logp'] = losses.token_log_probs(ref_logits_BCV, targets_BC)
      if exact_kl:
        out['kl'] = losses.kl_exact(logits_BCV, ref_logits_BCV)
    return out

  xs = (h_BXD, targets_BX) + (() if ref_model is None else (ref_h_BXD,))
  return map_position_chunks(one, xs, vocab_size=model.cfg.vocab_size,
                             max_logits=max_logits, remat=remat)


def count_params(state) -> int:
  return sum(x.size for x in jax.tree.leaves(state))
