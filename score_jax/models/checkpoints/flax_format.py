"""Gemma Flax checkpoints as Google publishes them, and our own Orbax format.

Published layout (an Orbax directory; the gemma library calls it FLAT): one entry
per module path, holding that module's leaves, e.g.

  'transformer/embedder':                   {'input_embedding': (V, D)}
  'transformer/layer_0/attn/q_einsum':      {'w': (N, D, H)}     (or kv_einsum
                                             (2, K, D, H); qkv_einsum (3, N, D, H))
  'transformer/layer_0/attn/attn_vec_einsum': {'w': (N, H, D)}
  'transformer/layer_0/attn/_query_norm':   {'scale': (H,)}       (Gemma 3)
  'transformer/layer_0/mlp/gating_einsum':  {'w': (2, D, F)} Gemma 1, (2, F, D) Gemma 2/3
  'transformer/layer_0/mlp/linear':         {'w': (F, D)}
  'transformer/layer_0/pre_attention_norm': {'scale': (D,)}  (likewise the other norms)
  'transformer/final_norm':                 {'scale': (D,)}

The nested form ({'transformer': {'layer_0': ...}}, mlp leaves without 'w') reads
the same: every tree is flattened to '/'-joined keys first. Keys outside
'transformer/' (the SigLIP vision tower) and the embedder's mm_* projections are
ignored: we load the text decoder.

Our format is an ocp.StandardCheckpointer directory of our param tree (the pure
dict of the nnx.State: embedder, layers (stacked), final_norm).
"""
from __future__ import annotations

import pathlib
import re
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from score_jax.models.checkpoints import common
from score_jax.models.config import ModelConfig
from score_jax.models.layers import published_to_stored

_PREFIX = 'transformer/'
_MLP_LEAVES = re.compile(r'/mlp/(gating_einsum|linear)$')


def _leaf_name(key: Any) -> str:
  return str(getattr(key, 'key', getattr(key, 'name', key)))


def _tree_metadata(path: pathlib.Path) -> Any:
  """The checkpoint's tree of array metadata (orbax 0.11 and 0.12 spellings)."""
  if not path.is_dir():
    raise common.CheckpointError(f'{path}: not an Orbax checkpoint directory')
  try:
    md = ocp.PyTreeCheckpointer().metadata(path)
  except Exception as e:  # orbax raises several types for a non-checkpoint dir
    raise common.CheckpointError(f'{path}: cannot read Orbax metadata ({e})') from e
  md = getattr(md, 'item_metadata', md)
  return getattr(md, 'tree', md)


def _flatten(tree: Any) -> dict[str, tuple[tuple[str, ...], Any]]:
  """'/'-joined key -> (orbax path, leaf) for every array leaf of `tree`."""
  out = {}
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  for path, leaf in leaves:
    parts = tuple(_leaf_name(k) for k in path)
    out['/'.join(parts)] = (parts, leaf)
  return out


class OrbaxReader:
  """Reads single arrays of an Orbax checkpoint by '/'-joined key (partial restore)."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self.source = str(self.path)
    flat = _flatten(_tree_metadata(self.path))
    self._paths, self._shapes = {}, {}
    for key, (parts, leaf) in flat.items():
      key = key[len('params/'):] if key.startswith('params/') else key
      if _MLP_LEAVES.search(key):  # nested layout: mlp leaves have no 'w'
        key += '/w'
      self._paths[key] = parts
      self._shapes[key] = tuple(leaf.shape)
    self._ckptr = ocp.PyTreeCheckpointer()

  def shapes(self) -> Mapping[str, tuple[int, ...]]:
    return self._shapes

  def read(self, key: str) -> np.ndarray:
    parts = self._paths[key]
    item, restore = {}, {}
    node_i, node_r = item, restore
    for p in parts[:-1]:
      node_i, node_r = node_i.setdefault(p, {}), node_r.setdefault(p, {})
    node_i[parts[-1]] = 0
    node_r[parts[-1]] = ocp.RestoreArgs(restore_type=np.ndarray)
    out = self._ckptr.restore(self.path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore, partial_restore=True))
    for p in parts:
      out = out[p]
    return np.asarray(out)


def _layer_key(path: str, layer: int) -> str:
  rest = path[len('layers/'):]
  if rest in ('mlp/gating_einsum', 'mlp/linear'):
    rest += '/w'
  return f'{_PREFIX}layer_{layer}/{rest}'


def _global_key(path: str) -> str:
  return _PREFIX + path


def flax_plan(cfg: ModelConfig) -> common.Plan:
  """Our params from the published layout (layers.published_to_stored per weight)."""
  _, state = common.abstract_params(cfg)
  plan: common.Plan = {}
  for path, var in common.flat_params(state).items():
    if not path.startswith('layers/'):
      plan[path] = common.Piece((_global_key(path),), (tuple(var.shape),))
      continue
    shape = tuple(var.shape[1:])
    combine = lambda a: a
    perm = published_to_stored(path[len('layers/'):], common.generation(cfg))
    if perm is not None:
      inverse = tuple(int(i) for i in np.argsort(perm))
      shape = tuple(shape[i] for i in inverse)
      combine = lambda a, perm=perm: np.transpose(a, perm)
    plan[path] = [common.Piece((_layer_key(path, l),), (shape,), combine)
                  for l in range(cfg.num_layers)]
  return plan


def _ignored(key: str) -> bool:
  return not key.startswith(_PREFIX) or key.startswith(_PREFIX + 'embedder/mm_')


def load_flax(path: str | pathlib.Path, cfg: ModelConfig, **assemble_kw) -> nnx.State:
  """Our param State from a published Gemma Flax checkpoint directory."""
  reader = OrbaxReader(path)
  if not any(k.startswith(_PREFIX) for k in reader.shapes()):
    raise common.CheckpointError(
        f'{path}: no {_PREFIX!r} keys; expected the published Gemma Flax layout '
        f'(found e.g. {sorted(reader.shapes())[:3]})')
  return common.assemble(cfg, flax_plan(cfg), reader, ignore=_ignored, **assemble_kw)


def to_flax_tree(cfg: ModelConfig, state) -> dict[str, dict[str, np.ndarray]]:
  """The published layout of our params, as numpy (gathered one parameter at a time)."""
  tree: dict[str, dict[str, np.ndarray]] = {}
  for path, value in common.host_params(state).items():
    layers = range(cfg.num_layers) if path.startswith('layers/') else [None]
    for l in layers:
      if l is None:
        key, a = _global_key(path), value
      else:
        key, a = _layer_key(path, l), value[l]
        perm = published_to_stored(path[len('layers/'):], common.generation(cfg))
        if perm is not None:
          a = np.transpose(a, np.argsort(perm))
      module, leaf = key.rsplit('/', 1)
      tree.setdefault(module, {})[leaf] = np.ascontiguousarray(a)
  return tree


def save_flax(path: str | pathlib.Path, cfg: ModelConfig, state) -> pathlib.Path:
  """Writes our params in the published Gemma Flax layout (an Orbax directory)."""
  path = pathlib.Path(path).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, to_flax_tree(cfg, state))
  return path


def save_orbax(path: str | pathlib.Path, state) -> pathlib.Path:
  """Writes our param State (its pure dict) as an ocp.StandardCheckpointer directory."""
  path = pathlib.Path(path).absolute()
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  pure = state.to_pure_dict() if isinstance(state, nnx.State) else state
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, pure)
  return path


def load_orbax(path: str | pathlib.Path, cfg: ModelConfig, *, shardings=None, mesh=None,
               progress: bool = False) -> nnx.State:
  """Our param State from a directory written by save_orbax, restored sharded.

  Orbax reads each array straight onto its target sharding; shapes are checked
  against the preset first.
  """
  del progress  # orbax restores all arrays in one call
  path = pathlib.Path(path).absolute()
  _, state = common.abstract_params(cfg)
  params = common.flat_params(state)
  found = {k: (tuple(v[1].shape), v[1].dtype) for k, v in _flatten(_tree_metadata(path)).items()}
  problems = [f'key {k!r} missing (expected shape {tuple(v.shape)})'
              for k, v in params.items() if k not in found]
  problems += [f'key {k!r} has shape {found[k][0]}; expected {tuple(v.shape)}'
               for k, v in params.items() if k in found and found[k][0] != tuple(v.shape)]
  extra = sorted(set(found) - set(params))
  if extra:
    problems.append(f'unexpected key(s) {extra[:4]}')
  if problems:
    raise common.CheckpointError(f'{path}: does not match preset {cfg.name!r}:\n  '
                                 + '\n  '.join(problems))
  shardings = (common.flat_shardings(shardings) if shardings
               else common.fsdp_shardings(state, mesh))
  dtype = cfg.jnp_param_dtype
  target = state.to_pure_dict()
  target = jax.tree_util.tree_map_with_path(
      lambda p, x: jax.ShapeDtypeStruct(
          x.shape, dtype, sharding=shardings['/'.join(_leaf_name(k) for k in p)]), target)
  with ocp.StandardCheckpointer() as ckptr:
    pure = ckptr.restore(path, target)
  nnx.replace_by_pure_dict(state, pure)
  return state


def is_published_layout(path: str | pathlib.Path) -> bool:
  """True for a published Gemma layout, False for ours (raises if not Orbax)."""
  keys = _flatten(_tree_metadata(pathlib.Path(path))).keys()
  return any(k.startswith(_PREFIX) or k.startswith('params/' + _PREFIX) for k in keys)
