"""The Gemma 4 text decoder: embed (+ per-layer embeddings) -> grouped layer scans -> logits.

Same call interface as transformer.Transformer (`__call__`, `hidden`, `logits`,
`cfg`), so the sampler, the train step and the losses use it unchanged; its KV
cache (Gemma4Cache) holds one stack per layer kind.

Why this structure: Gemma 4 layers differ in shape (a global layer has its own
head_dim and kv heads and may lack a v projection; KV-shared layers have no k/v
weights and may have a double-wide MLP), so one stacked scan as in Gemma 1-3 is
impossible, and a Python loop over layers makes compile time grow with depth.
Each layer kind gets its own stacked parameters; within a run of layers with the
same sharing status the kinds repeat with the period of the attention pattern
(e.g. 5 local, 1 global), so a jax.lax.scan runs over whole periods with the
period's p layers unrolled in its body. Compile time depends on p (plus at most
2p unrolled layers at a run's ragged ends), not on the depth.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax import struct

from score_jax.models.config import AttentionType, ModelConfig
from score_jax.models.gemma4_layers import KINDS, Block4, ScaleNorm, layer_dims
from score_jax.models.layers import Embedder, _fan_in_init, _param
from score_jax.models.transformer import REMAT_POLICIES, Transformer, stacked_blocks


@struct.dataclass
class Gemma4Cache:
  """K/V of the non-shared layers, one (n, B, S, K, H) stack per layer kind."""
  k: dict[str, jax.Array]
  v: dict[str, jax.Array]
  pos_BS: jax.Array

  @property
  def num_slots(self) -> int:
    return self.pos_BS.shape[1]


def layer_kinds(cfg: ModelConfig) -> tuple[str, ...]:
  """The kind (gemma4_layers.KINDS) of each layer."""
  first_shared = cfg.num_layers - cfg.num_kv_shared_layers
  return tuple(('global' if t == AttentionType.GLOBAL else 'local')
               + ('_shared' if i >= first_shared else '')
               for i, t in enumerate(cfg.attention_types))


def _index_in_kind(kinds: tuple[str, ...]) -> list[int]:
  return [kinds[:i].count(k) for i, k in enumerate(kinds)]


def init_cache(cfg: ModelConfig, batch_size: int, num_slots: int, dtype=None) -> Gemma4Cache:
  counts = {k: n for k in KINDS[:2] if (n := layer_kinds(cfg).count(k))}
  dtype = dtype or cfg.jnp_dtype
  shape = lambda k: (counts[k], batch_size, num_slots, *layer_dims(cfg, k))
  return Gemma4Cache(k={k: jnp.zeros(shape(k), dtype) for k in counts},
                     v={k: jnp.zeros(shape(k), dtype) for k in counts},
                     pos_BS=jnp.zeros((batch_size, num_slots), jnp.int32))


class Gemma4Transformer(nnx.Module):
  """Gemma 4 causal LM. Parameters: embedder, [per-layer embedding], one stack per
  layer kind (layers_local, layers_global, ...), final_norm."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    if cfg.architecture != 'gemma4':
      raise ValueError(f"{cfg.name}: architecture={cfg.architecture!r}; Gemma4Transformer "
                       "needs 'gemma4'")
    if cfg.remat not in REMAT_POLICIES:
      raise ValueError(f'{cfg.name}: remat={cfg.remat!r}; expected one of '
                       + ', '.join(sorted(REMAT_POLICIES)))
    self.cfg = cfg
    self.embedder = Embedder(cfg, rngs=rngs)
    if cfg.per_layer_input_dim:
      lp, pdt = cfg.num_layers * cfg.per_layer_input_dim, cfg.jnp_param_dtype
      init = lambda k, s, d: (0.01 * jax.random.normal(k, s, jnp.float32)).astype(d)
      self.per_layer_embedding = _param(
          rngs, init, (cfg.per_layer_vocab_size or cfg.vocab_size, lp), pdt, ('vocab', None))
      self.per_layer_model_projection = _param(rngs, _fan_in_init([0]),
                                               (cfg.embed_dim, lp), pdt, ('embed', None))
      self.per_layer_projection_norm = ScaleNorm(cfg.per_layer_input_dim, None, cfg,
                                                 rngs=rngs)
    kinds = layer_kinds(cfg)
    for kind in KINDS:
      if kind in kinds:
        setattr(self, f'layers_{kind}', stacked_blocks(
            lambda r, kind=kind: Block4(cfg, kind, rngs=r), kinds.count(kind), rngs))
    self.final_norm = ScaleNorm(cfg.embed_dim, 'embed', cfg, rngs=rngs)

  # Same head and entry point as Gemma 1-3: soft-capped tied logits of hidden().
  __call__ = Transformer.__call__
  logits = Transformer.logits

  def _per_layer_inputs(self, tokens_BT, x_BTD):
    """(L, B, T, P) per-layer inputs: token table plus a projection of the embedding."""
    cfg = self.cfg
    if not cfg.per_layer_input_dim:
      return None
    b, t = tokens_BT.shape
    p, dt = cfg.per_layer_input_dim, x_BTD.dtype
    tok_BTLP = jnp.take(self.per_layer_embedding[...], tokens_BT, axis=0).astype(dt)
    tok_BTLP = tok_BTLP.reshape(b, t, cfg.num_layers, p) * jnp.asarray(p ** 0.5, dt)
    proj_BTLP = (x_BTD @ self.per_layer_model_projection[...].astype(dt)
                 * jnp.asarray(cfg.embed_dim ** -0.5, dt)).reshape(b, t, cfg.num_layers, p)
    ple_BTLP = (self.per_layer_projection_norm(proj_BTLP) + tok_BTLP) * jnp.asarray(
        2.0 ** -0.5, dt)
    return ple_BTLP.transpose(2, 0, 1, 3)

  def hidden(self, tokens_BT, positions_BT, attn_mask_BTS, cache=None, cache_index=None,
             activation_sharding=None):
    """Final-norm hidden states h_BTD and the updated cache (None without one)."""
    cfg = self.cfg
    constrain = lambda x: (x if activation_sharding is None else
                           jax.lax.with_sharding_constraint(x, activation_sharding))
    x_BTD = constrain(self.embedder.encode(tokens_BT))
    ple_LBTP = self._per_layer_inputs(tokens_BT, x_BTD)
    if cache is None:
      key_pos_BS = positions_BT
    else:
      key_pos_BS = jax.lax.dynamic_update_slice(
          cache.pos_BS, positions_BT.astype(cache.pos_BS.dtype), (0, cache_index))
    masks = {'global': attn_mask_BTS, 'local': attn_mask_BTS}
    if cfg.sliding_window:
      in_window = (positions_BT[:, :, None] - key_pos_BS[:, None, :]) < cfg.sliding_window
      masks['local'] = attn_mask_BTS & in_window
    run = _Runner(self, positions_BT, masks, ple_LBTP, constrain, cache_index)
    kinds = layer_kinds(cfg)
    first_shared = cfg.num_layers - cfg.num_kv_shared_layers
    cache_kv = None if cache is None else {k: (cache.k[k], cache.v[k]) for k in cache.k}
    x_BTD, new_kv = run.segment(x_BTD, 0, first_shared, cache_kv,
                                emit=cache is not None or first_shared < cfg.num_layers)
    new_cache, shared = None, {}
    if cache is not None:
      start = (0, 0, cache_index, 0, 0)
      upd = lambda c, n: jax.lax.dynamic_update_slice(c, n.astype(c.dtype), start)
      new_cache = Gemma4Cache(k={k: upd(cache.k[k], new_kv[k][0]) for k in cache.k},
                              v={k: upd(cache.v[k], new_kv[k][1]) for k in cache.v},
                              pos_BS=key_pos_BS)
    if first_shared < cfg.num_layers:
      idx = _index_in_kind(kinds)
      for t in ('local', 'global'):
        if t + '_shared' in kinds:  # the last non-shared layer of the type produces
          j = idx[max(i for i in range(first_shared) if kinds[i] == t)]
          src = new_kv[t] if new_cache is None else (new_cache.k[t], new_cache.v[t])
          shared[t] = (src[0][j], src[1][j])
      x_BTD, _ = run.segment(x_BTD, first_shared, cfg.num_layers, None, emit=False,
                             shared=shared)
    return self.final_norm(x_BTD), new_cache


class _Runner:
  """Runs layers [start, stop) of one sharing status: ragged ends unrolled, whole
  periods of the attention pattern under one jax.lax.scan."""

  def __init__(self, model: Gemma4Transformer, positions_BT, masks, ple_LBTP, constrain,
               cache_index):
    self.cfg = model.cfg
    self.kinds = layer_kinds(model.cfg)
    self.idx = _index_in_kind(self.kinds)
    self.split = {k: nnx.split(getattr(model, f'layers_{k}'))
                  for k in KINDS if k in self.kinds}
    self.positions_BT, self.masks, self.ple_LBTP = positions_BT, masks, ple_LBTP
    self.constrain, self.cache_index = constrain, cache_index

  def _layer(self, x_BTD, kind, state, ple_BTP, cache_kv, shared):
    block = nnx.merge(self.split[kind][0], state)
    x_BTD, new_kv, _ = block(x_BTD, self.positions_BT, self.masks[kind.split('_')[0]],
                             ple_BTP, shared.get(kind.split('_')[0]), cache_kv,
                             self.cache_index)
    return self.constrain(x_BTD), new_kv

  def _slice(self, tree, lo, n):
    return jax.tree.map(lambda a: a[lo:lo + n], tree)

  def segment(self, x_BTD, start, stop, cache_kv, emit, shared=None):
    """x after layers [start, stop), and {kind: (k, v)} of their new tokens'
    K/V stacked per kind (when emit)."""
    p = len(self.cfg.attention_pattern)
    shared = shared or {}
    lead_end = min(stop, start + (-start) % p)
    groups = (stop - lead_end) // p
    tail_start = lead_end + groups * p
    pieces: dict[str, list[Any]] = {}

    def one(x_BTD, i):
      kind, j = self.kinds[i], self.idx[i]
      state = jax.tree.map(lambda a: a[j], self.split[kind][1])
      ple = None if self.ple_LBTP is None else self.ple_LBTP[i]
      kv = None if cache_kv is None else jax.tree.map(lambda a: a[j], cache_kv[kind])
      x_BTD, new_kv = self._layer(x_BTD, kind, state, ple, kv, shared)
      if emit:
        pieces.setdefault(kind, []).append(jax.tree.map(lambda a: a[None], new_kv))
      return x_BTD

    for i in range(start, lead_end):
      x_BTD = one(x_BTD, i)
    if groups:
      x_BTD = self._scan(x_BTD, lead_end, groups, cache_kv, emit, shared, pieces)
    for i in range(tail_start, stop):
      x_BTD = one(x_BTD, i)
    if not emit:
      return x_BTD, None
    return x_BTD, {k: jax.tree.map(lambda *a: jnp.concatenate(a), *v)
                   for k, v in pieces.items()}

  def _scan(self, x_BTD, first, groups, cache_kv, emit, shared, pieces):
    """Layers [first, first + groups * p) as a scan over groups of one period."""
    p = len(self.cfg.attention_pattern)
    group_kinds = self.kinds[first:first + p]
    per_kind = {k: group_kinds.count(k) for k in dict.fromkeys(group_kinds)}
    regroup = lambda a, c: a.reshape(groups, c, *a.shape[1:])
    xs_state = {k: jax.tree.map(lambda a, c=c: regroup(a, c), self._slice(
        self.split[k][1], self.idx[first + group_kinds.index(k)], groups * c))
                for k, c in per_kind.items()}
    xs_kv = None
    if cache_kv is not None:
      xs_kv = {k: jax.tree.map(lambda a, c=c: regroup(a, c), self._slice(
          cache_kv[k], self.idx[first + group_kinds.index(k)], groups * c))
               for k, c in per_kind.items()}
    xs_ple = None
    if self.ple_LBTP is not None:
      xs_ple = regroup(self.ple_LBTP[first:first + groups * p], p)

    def body(x_BTD, xs):
      states, kvs, ples = xs
      out: dict[str, list[Any]] = {k: [] for k in per_kind}
      for q, kind in enumerate(group_kinds):
        r = group_kinds[:q].count(kind)
        state = jax.tree.map(lambda a: a[r], states[kind])
        kv = None if kvs is None else jax.tree.map(lambda a: a[r], kvs[kind])
        x_BTD, new_kv = self._layer(x_BTD, kind, state, None if ples is None else ples[q],
                                    kv, shared)
        out[kind].append(new_kv)
      ys = ({k: jax.tree.map(lambda *a: jnp.stack(a), *v) for k, v in out.items()}
            if emit else None)
      return x_BTD, ys

    if self.cfg.remat != 'none':
      body = jax.checkpoint(body, policy=REMAT_POLICIES[self.cfg.remat], prevent_cse=False)
    x_BTD, ys = jax.lax.scan(body, x_BTD, (xs_state, xs_kv, xs_ple),
                             unroll=1 if self.cfg.scan_layers else groups)
    if emit:
      for k, kv in ys.items():  # (G, c, ...) -> (G * c, ...)
        pieces.setdefault(k, []).append(jax.tree.map(
            lambda a: a.reshape(-1, *a.shape[2:]), kv))
    return x_BTD
