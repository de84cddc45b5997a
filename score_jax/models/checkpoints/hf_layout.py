"""Our parameters from tensors named and shaped as Hugging Face transformers' Gemma.

A per-tensor form of hf_convert.hf_state_dict_to_params (which converts a whole
state dict at once): the importers need one parameter at a time so it can be
placed sharded before the next is read. tests/models/checkpoints check the two
agree. Both the safetensors and the GGUF importer use it: GGUF differs only in
tensor names (gguf's own TensorNameMap) and in storing norms as 1 + scale.

HF layout per layer (torch Linear weights are (out, in)):
  self_attn.{q,k,v}_proj.weight (N*H | K*H, D), self_attn.o_proj.weight (D, N*H),
  mlp.{gate,up}_proj.weight (F, D), mlp.down_proj.weight (D, F), norms (D,) or (H,).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from score_jax.models import hf_convert
from score_jax.models.checkpoints import common
from score_jax.models.config import ModelConfig


def norm_names(cfg: ModelConfig) -> dict[str, str]:
  """Our per-layer norm path ('pre_ffw_norm/scale') -> HF module under model.layers.{i}."""
  # pylint: disable-next=protected-access  (one table for both directions)
  return {ours + '/scale': theirs for ours, theirs in hf_convert._norm_names(cfg).items()}


def hf_plan(cfg: ModelConfig, name: Callable[[str], str],
            norm_shift: float = 0.0) -> common.Plan:
  """Plan reading tensor `name(hf_name)` for each HF name ('model.layers.0.mlp.up_proj').

  name: maps an HF module name (no '.weight') to the file's key.
  norm_shift: subtracted from every norm weight (GGUF stores 1 + scale).
  """
  n, k, d, h, f = (cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim,
                   cfg.hidden_dim)

  def heads(m):  # (m*H, D) -> (D, m, H)
    return lambda a: a.T.reshape(d, m, h)

  def layer(l, mod):
    return name(f'model.layers.{l}.{mod}')

  def shifted(a):
    return a.astype(np.float32) - norm_shift if norm_shift else a

  def stack(*fns):  # along axis 1: kv (D, 2, K, H), qkv (D, 3, N, H), gating (D, 2, F)
    return lambda *arrays: np.stack([fn(a) for fn, a in zip(fns, arrays)], axis=1)

  per_layer: dict[str, Callable[[int], common.Piece]] = {
      'layers/attn/attn_vec_einsum/w': lambda l: common.Piece(
          (layer(l, 'self_attn.o_proj'),), ((d, n * h),), lambda a: a.T.reshape(n, h, d)),
      'layers/mlp/gating_einsum': lambda l: common.Piece(
          (layer(l, 'mlp.gate_proj'), layer(l, 'mlp.up_proj')), ((f, d), (f, d)),
          stack(np.transpose, np.transpose)),
      'layers/mlp/linear': lambda l: common.Piece(
          (layer(l, 'mlp.down_proj'),), ((d, f),), np.transpose),
  }
  qkv = lambda l: (layer(l, 'self_attn.q_proj'), layer(l, 'self_attn.k_proj'),
                   layer(l, 'self_attn.v_proj'))
  if n == k:
    per_layer['layers/attn/qkv_einsum/w'] = lambda l: common.Piece(
        qkv(l), ((n * h, d),) * 3, stack(heads(n), heads(n), heads(n)))
  else:
    per_layer['layers/attn/q_einsum/w'] = lambda l: common.Piece(
        qkv(l)[:1], ((n * h, d),), heads(n))
    per_layer['layers/attn/kv_einsum/w'] = lambda l: common.Piece(
        qkv(l)[1:], ((k * h, d),) * 2, stack(heads(k), heads(k)))
  for ours, theirs in norm_names(cfg).items():
    dim = h if ours.startswith('attn/') else d
    per_layer['layers/' + ours] = (
        lambda l, t=theirs, dim=dim: common.Piece((layer(l, t),), ((dim,),), shifted))

  plan: common.Plan = {
      path: [make(l) for l in range(cfg.num_layers)] for path, make in per_layer.items()}
  plan['embedder/input_embedding'] = common.Piece(
      (name('model.embed_tokens'),), ((cfg.vocab_size, d),))
  plan['final_norm/scale'] = common.Piece((name('model.norm'),), ((d,),), shifted)
  return plan


def gemma4_plan(cfg: ModelConfig, key: Callable[[str], str]) -> common.Plan:
  """Plan of a Gemma 4 checkpoint; key maps an HF name relative to the decoder
  ('layers.0.self_attn.q_proj.weight') to the file's key. Names and layouts are
  gemma4_convert's tables; expected file shapes follow from ours by eval_shape."""
  import jax  # pylint: disable=g-import-not-at-top
  from score_jax.models import gemma4_convert as g4  # pylint: disable=g-import-not-at-top
  flat = common.flat_params(common.abstract_params(cfg)[1])

  def hf_shape(fwd, shape):
    return tuple(jax.eval_shape(fwd, jax.ShapeDtypeStruct(shape, np.float32)).shape)

  def piece(entries, our_shape, names):
    """One Piece from the '#c' components (or the single entry) of one array."""
    multi = len(entries) > 1
    ax = g4.COMPONENT_AXIS - 1   # one layer: no L
    part = our_shape[:ax] + our_shape[ax + 1:] if multi else our_shape
    shapes = tuple(hf_shape(fwd, part) for _, _, fwd, _ in entries)
    backs = [back for _, _, _, back in entries]
    combine = ((lambda *a: np.stack([b(x) for b, x in zip(backs, a)], axis=ax)) if multi
               else backs[0])
    return common.Piece(tuple(key(n) for n in names), shapes, combine)

  plan: common.Plan = {}
  for entry in g4._top_maps(cfg):  # pylint: disable=protected-access
    plan[entry[0]] = piece([entry], tuple(flat[entry[0]].shape), [entry[1]])
  kinds = g4.layer_kinds(cfg)
  for kind in dict.fromkeys(kinds):
    layers = [i for i, k in enumerate(kinds) if k == kind]
    groups: dict[str, list] = {}
    for entry in g4._layer_maps(cfg, kind):  # pylint: disable=protected-access
      groups.setdefault(entry[0].partition('#')[0], []).append(entry)
    for path, entries in groups.items():
      ours = f'layers_{kind}/{path}'
      plan[ours] = [piece(entries, tuple(flat[ours].shape[1:]),
                          [f'layers.{i}.{e[1]}' for e in entries]) for i in layers]
  return plan
