"""Meshes and logical sharding rules: a strategy is a mesh shape plus one rules table.

Every parameter carries `logical_axes` metadata (embed, heads, kv_heads, head_dim,
mlp, vocab, layers; expert in Gemma 4's mixture of experts); activations use
batch / activation_length / activation_embed.
A rules table maps each logical axis to a mesh axis (data, fsdp, tensor) or None;
a dimension is sharded only when the mesh axis divides it, otherwise it stays
replicated (e.g. the single kv head of multi-query attention under tensor
parallelism).

Several processes (multi-host): the mesh spans every process's devices.
`host_local_batch_to_global` turns each process's rows into one global batch;
`to_process_local` gives every process the whole weight tree on its own devices,
which is how the sampler runs (process-locally, on that process's prompt rows).
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
# Expert parallelism (Gemma 4 26B-A4B): each device holds whole experts (the
# expert axis over fsdp); everything else as FSDP (an embed dim over fsdp where
# the expert axis has not taken it).
_RULES_FSDP_EP: Rules = (_BATCH, ('expert', 'fsdp'), ('embed', 'fsdp'), ('vocab', None))
# Logical axes of the residual stream x_BTD at layer boundaries. No table above
# maps activation_length / activation_embed, so those stay replicated.
ACTIVATION_AXES = ('batch', 'activation_length', 'activation_embed')


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
    'fsdp_ep': Strategy('fsdp_ep', (1, -1, 1), _RULES_FSDP_EP),
}


def get_strategy(name: str, mesh_shape: Sequence[int] | None = None) -> Strategy:
  """The named strategy; mesh_shape (config.mesh.shape) overrides its default."""
  if name not in STRATEGIES:
    raise ValueError(f'config.mesh.strategy: unknown sharding strategy {name!r}; '
                     f'expected one of {", ".join(STRATEGIES)}')
  s = STRATEGIES[name]
  return dataclasses.replace(s, mesh_shape=tuple(mesh_shape)) if mesh_shape else s


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills the single -1 so the product is num_devices; clear errors otherwise."""
  shape = tuple(int(s) for s in shape)
  where = f'mesh shape {shape} over axes {MESH_AXES}'
  hint = ('; set config.mesh.shape (one entry may be -1) or pick another '
          'config.mesh.strategy')
  if len(shape) != len(MESH_AXES):
    raise ValueError(f'{where}: expected {len(MESH_AXES)} sizes{hint}')
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'{where}: sizes must be positive, or -1 for "the rest"{hint}')
  if shape.count(-1) > 1:
    raise ValueError(f'{where}: at most one axis may be -1{hint}')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f'{where}: the {num_devices} devices are not a multiple of '
                       f'{known}, the product of the fixed sizes{hint}')
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f'{where} uses {math.prod(shape)} devices; {num_devices} are '
                     f'available{hint}')
  return shape


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axes (pjit-style propagation).

  Over every process's devices by default (jax.devices()), in jax.make_mesh's
  topology-aware order.
  """
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


def activation_sharding(mesh: Mesh, rules: Rules,
                        shape_BTD: Sequence[int]) -> NamedSharding:
  """Sharding of the residual stream x_BTD at layer boundaries (ACTIVATION_AXES).

  Rows over the batch axes when they divide B (as the batch itself); length and
  embed replicated unless the rules map activation_length / activation_embed.
  Pass it to Transformer.__call__(activation_sharding=...) (see
  training.step.compile_step), which constrains x_BTD with it.
  """
  return NamedSharding(mesh, logical_to_spec(ACTIVATION_AXES, shape_BTD, rules, mesh))


def bytes_per_device(tree) -> dict[int, int]:
  """Bytes each device holds of a tree of (sharded) arrays."""
  out: dict[int, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
  return out


# ------------------------------------------------------------------ processes


def _rows_split_by_process(sharding: NamedSharding) -> bool:
  """True when each process's devices hold their own contiguous run of row blocks.

  Then every process's rows can be its run of the global batch, kept together
  (rows of one prompt's k samples stay adjacent, as the LOO baseline needs).
  """
  rows = NamedSharding(sharding.mesh, P(sharding.spec[0]))
  n = math.prod(sharding.mesh.shape[a] for a in _axes(sharding.spec[0]))
  blocks: dict[int, set[int]] = {}
  for device, index in rows.devices_indices_map((n,)).items():
    blocks.setdefault(device.process_index, set()).add(index[0].start or 0)
  seen: set[int] = set()
  for s in blocks.values():
    if seen & s or len(s) != n // len(blocks) or max(s) - min(s) + 1 != len(s):
      return False
    seen |= s
  return True


def _axes(entry) -> tuple[str, ...]:
  return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def host_local_batch_to_global(batch, mesh: Mesh, rules: Rules):
  """Each process's rows -> one global array sharded over the batch axes.

  Every process passes its own rows (the same count on each). When each process's
  devices hold their own contiguous run of row blocks (the usual case: a batch
  axis spans the processes in order), each process's rows become its run. Else
  (e.g. processes that are replicas of the same rows, as under pure tensor
  parallelism across hosts) the rows of all processes are gathered first, in
  process order, and every process builds the global batch from all of them.
  """
  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, rules, x.ndim)
    blocks = math.prod(mesh.shape[a] for a in _axes(sharding.spec[0]))
    if (x.shape[0] * jax.process_count()) % blocks:
      raise ValueError(
          f'a batch of {x.shape[0]} rows per process x {jax.process_count()} '
          f'process(es) does not split over the batch axes {sharding.spec[0]} '
          f'({blocks} ways); expected a multiple (rows = config.data.batch_size x '
          'config.train.samples_per_prompt)')
    if jax.process_count() > 1 and not _rows_split_by_process(sharding):
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      x = np.asarray(multihost_utils.process_allgather(x, tiled=True))
      return jax.make_array_from_process_local_data(sharding, x, x.shape)
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(put, batch)


def process_mesh(mesh: Mesh) -> Mesh:
  """This process's devices as a mesh with the axes of `mesh` (for process-local work).

  One process: `mesh` itself. Several: the process's devices of `mesh` in id order,
  shaped (data, fsdp, tensor) with tensor = gcd(global tensor, local devices),
  then fsdp likewise, the rest on data; the same shape on every process.
  """
  if jax.process_count() == 1:
    return mesh
  return Mesh(_process_blocks(mesh)[jax.process_index()], mesh.axis_names,
              axis_types=mesh.axis_types)


def _process_blocks(mesh: Mesh) -> np.ndarray:
  """(num_processes, *local_shape) array of devices: row p is process p's mesh."""
  by_process: dict[int, list] = {}
  for d in mesh.devices.flat:
    by_process.setdefault(d.process_index, []).append(d)
  counts = {p: len(ds) for p, ds in by_process.items()}
  if len(set(counts.values())) != 1 or sorted(counts) != list(range(jax.process_count())):
    raise ValueError(f'mesh {dict(mesh.shape)}: devices per process {counts}; expected '
                     f'every one of the {jax.process_count()} processes to hold the same '
                     'number of the mesh\'s devices')
  n = next(iter(counts.values()))
  sizes = dict(mesh.shape)
  tensor = math.gcd(sizes.get('tensor', 1), n)
  fsdp = math.gcd(sizes.get('fsdp', 1), n // tensor)
  local = {'data': n // tensor // fsdp, 'fsdp': fsdp, 'tensor': tensor}
  shape = tuple(local[a] for a in mesh.axis_names)
  return np.stack([np.array(sorted(by_process[p], key=lambda d: d.id)).reshape(shape)
                   for p in range(jax.process_count())])


def for_sampling(params: nnx.State, mesh: Mesh, strategy: Strategy) -> nnx.State:
  """The sampler's copy of the weights.

  One process: resharded to the strategy's sample_rules (no-op without them).
  Several processes: every process gets the whole tree on its own devices (laid
  out by the sample rules, see to_process_local), so the sampler's jits run
  process-locally on that process's prompt rows. Global params would not do:
  jit reads host numpy prompts as one global value, the same on every process,
  while each process holds different rows.
  """
  if jax.process_count() == 1 and strategy.sample_rules is None:
    return params
  return to_process_local(params, mesh, strategy.sample_rules or strategy.rules)


def to_process_local(params: nnx.State, mesh: Mesh, rules: Rules) -> nnx.State:
  """Every process gets the whole params tree, laid out by `rules` on its own devices.

  One process: a device_put of params to `rules` on `mesh`. Several: the tree is
  first resharded on the global devices (viewed as a (process, *local) mesh) so
  that each process's devices hold one full copy between them, then each process
  wraps its shards as arrays on process_mesh(mesh). Jitted functions of the result
  run on this process's devices alone, with no cross-process collectives, so they
  may take process-local inputs (host numpy arrays that differ between processes).
  Costs one all-gather of the weights across processes, and per device the memory
  of the tree over one process's devices (not over all of them).
  """
  local = process_mesh(mesh)
  specs = param_specs(params, rules, local)
  if jax.process_count() == 1:
    return jax.device_put(params, param_shardings(params, rules, mesh))
  is_spec = lambda x: isinstance(x, P)
  hosts = Mesh(_process_blocks(mesh), ('process',) + tuple(mesh.axis_names),
               axis_types=(AxisType.Auto,) * (len(mesh.axis_names) + 1))
  staged = jax.device_put(
      params, jax.tree.map(lambda s: NamedSharding(hosts, s), specs, is_leaf=is_spec))
  leaves, treedef = jax.tree.flatten(staged)
  spec_leaves = jax.tree.leaves(specs, is_leaf=is_spec)
  assert len(leaves) == len(spec_leaves), (len(leaves), len(spec_leaves))
  local_leaves = [
      jax.make_array_from_single_device_arrays(
          x.shape, NamedSharding(local, s), [sh.data for sh in x.addressable_shards])
      for x, s in zip(leaves, spec_leaves)]
  return jax.tree.unflatten(treedef, local_leaves)


def is_process_local(tree) -> bool:
  """True when every array of the tree lives on this process's devices only."""
  return all(getattr(x, 'is_fully_addressable', True) for x in jax.tree.leaves(tree))


def global_mean(x) -> float:
  """The mean of every process's values of x (host numpy) over all processes."""
  x = np.asarray(x, np.float32).reshape(-1)
  if jax.process_count() == 1:
    return float(x.mean()) if x.size else float('nan')
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  sums = np.asarray(multihost_utils.process_allgather(
      np.array([x.sum(), x.size], np.float32)))
  return float(sums[:, 0].sum() / sums[:, 1].sum())
