"""Meshes and logical sharding rules: a strategy is a mesh shape plus one rules table.

Every parameter carries `logical_axes` metadata (embed, heads, kv_heads, head_dim,
mlp, vocab, layers); activations use batch/length/embed. A rules table maps each
logical axis to a mesh axis (data, fsdp, tensor) or None; a dimension is sharded
only when the mesh axis divides it, otherwise it stays replicated (e.g. the single
kv head of multi-query attention under tensor parallelism).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

_BATCH = ('batch', ('data', 'fsdp'))
_RULES_REPLICATED: Rules = (_BATCH,)
_RULES_FSDP: Rules = (_BATCH, ('embed', 'fsdp'), ('vocab', None))
_RULES_TP: Rules = (_BATCH, ('heads', 'tensor'), ('kv_heads', 'tensor'),
                    ('mlp', 'tensor'), ('vocab', 'tensor'))
_RULES_FSDP_TP: Rules = (_BATCH, ('embed', 'fsdp'), ('heads', 'tensor'),
                         ('kv_heads', 'tensor'), ('mlp', 'tensor'), ('vocab', 'tensor'))


@dataclasses.dataclass(frozen=True)
class Strategy:
  """A named way to lay the model over devices.

  mesh_shape: sizes of (data, fsdp, tensor); one -1 takes the remaining devices.
  rules: logical axis -> mesh axis for training.
  sample_rules: rules for the sampler's copy of the weights (None: same as training),
    e.g. FSDP for training but weights replicated along fsdp while sampling.
  """
  name: str
  mesh_shape: tuple[int, int, int]
  rules: Rules
  sample_rules: Rules | None = None


STRATEGIES = {
    'dp': Strategy('dp', (-1, 1, 1), _RULES_REPLICATED),
    'fsdp': Strategy('fsdp', (1, -1, 1), _RULES_FSDP),
    'tp': Strategy('tp', (1, 1, -1), _RULES_TP),
    'fsdp_tp': Strategy('fsdp_tp', (1, -1, 2), _RULES_FSDP_TP),
    'fsdp_sample_replicated': Strategy('fsdp_sample_replicated', (1, -1, 1), _RULES_FSDP,
                                       sample_rules=_RULES_REPLICATED),
}


def get_strategy(name: str, mesh_shape: Sequence[int] | None = None) -> Strategy:
  if name not in STRATEGIES:
    raise ValueError(f'unknown sharding strategy {name!r}; expected one of '
                     f'{", ".join(STRATEGIES)}')
  s = STRATEGIES[name]
  return dataclasses.replace(s, mesh_shape=tuple(mesh_shape)) if mesh_shape else s


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills the single -1 so the product is num_devices; clear errors otherwise."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f'mesh shape {shape} must give sizes for {MESH_AXES}')
  if shape.count(-1) > 1:
    raise ValueError(f'mesh shape {shape}: at most one axis may be -1')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f'mesh shape {shape}: {num_devices} devices not divisible by {known}')
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f'mesh shape {shape} uses {math.prod(shape)} devices; '
                     f'{num_devices} are available')
  return shape


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axes (pjit-style propagation)."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int],
                    rules: Rules, mesh: Mesh) -> P:
  """PartitionSpec for one array; skips a mesh axis that doesn't divide or is taken."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, dim in zip(logical_axes, shape):
    target = table.get(name) if name is not None else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    targets = tuple(a for a in targets if a not in used and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in targets)
    if not targets or dim % size:
      spec.append(None)
      continue
    used.update(targets)
    spec.append(targets[0] if len(targets) == 1 else targets)
  return P(*spec)


def param_specs(state: nnx.State, rules: Rules, mesh: Mesh):
  """A tree of PartitionSpecs mirroring `state` (a params nnx.State)."""
  def spec(var):
    return logical_to_spec(var.get_metadata()['logical_axes'], var.shape, rules, mesh)
  return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_shardings(state: nnx.State, rules: Rules, mesh: Mesh):
  specs = param_specs(state, rules, mesh)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Rows over the batch axes, everything else replicated."""
  batch_axes = dict(rules).get('batch')
  return NamedSharding(mesh, P(batch_axes, *([None] * (ndim - 1))))


def bytes_per_device(tree) -> dict[int, int]:
  """Bytes each device holds of a tree of (sharded) arrays."""
  out: dict[int, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
  return out


def host_local_batch_to_global(batch, mesh: Mesh, rules: Rules):
  """Each process's rows -> one global array sharded over the batch axes."""
  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, rules, x.ndim)
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(put, batch)
