"""Shared machinery of the checkpoint importers: plans, validation, sharded placement.

Every importer reduces a file format to two things:

  * a `Reader`: the tensors of the file by key, with their shapes (known without
    reading any data) and a `read(key)` that returns one tensor as numpy;
  * a `Plan`: for each of our parameters ('layers/attn/q_einsum/w', ...) the
    file tensors it is made of, their expected shapes, and how to combine them
    into our layout (one `Piece`, or one per layer for the stacked layers).

`assemble` checks the whole plan against the reader before reading anything (so a
wrong preset fails at once, naming every bad key), then builds our parameters one
at a time: it reads that parameter's tensors, converts them to the preset's
param_dtype and places the result on the target sharding with
jax.make_array_from_callback. At no point is the whole model held by one device;
the host holds at most one (stacked) parameter.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Protocol, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from score_jax.models.config import ModelConfig
from score_jax.models.factory import create_model


class CheckpointError(ValueError):
  """A checkpoint that does not fit the chosen preset, or cannot be read."""


@dataclasses.dataclass(frozen=True)
class Piece:
  """One of our arrays (a parameter, or one layer of a stacked one) from file tensors."""
  keys: tuple[str, ...]
  shapes: tuple[tuple[int, ...], ...]      # expected shape of each file tensor
  combine: Callable[..., np.ndarray] = lambda a: a


Plan = dict[str, 'Piece | list[Piece]']    # our '/'-joined param path -> piece(s)


class Reader(Protocol):
  source: str                                # path named in errors

  def shapes(self) -> Mapping[str, tuple[int, ...]]: ...

  def read(self, key: str) -> np.ndarray: ...


def generation(cfg: ModelConfig) -> int:
  """1, 2 or 3: the Gemma generation whose published layout `cfg` follows."""
  if cfg.use_qk_norm:
    return 3
  if cfg.use_post_attn_norm or cfg.use_post_ffw_norm:
    return 2
  return 1


def abstract_params(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """The graphdef and the param State of `cfg` with ShapeDtypeStruct leaves."""
  return nnx.split(nnx.eval_shape(lambda: create_model(cfg, rngs=nnx.Rngs(0))))


def flat_params(state: nnx.State) -> dict[str, nnx.Variable]:
  """'layers/attn/q_einsum/w' -> its Variable, in a stable order."""
  return {'/'.join(map(str, path)): var for path, var in nnx.to_flat_state(state)}


def fsdp_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named 'fsdp' over `devices` (default: all), with Auto axis types."""
  devices = list(devices or jax.devices())
  return jax.make_mesh((len(devices),), ('fsdp',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def fsdp_spec(shape: Sequence[int], logical_axes: Sequence[str | None],
              num_shards: int) -> PartitionSpec:
  """Shards the largest non-'layers' axis divisible by `num_shards`; else replicates."""
  best = None
  for i, (size, name) in enumerate(zip(shape, logical_axes)):
    if name == 'layers' or size % num_shards or size < num_shards:
      continue
    if best is None or size > shape[best]:
      best = i
  spec = [None] * len(shape)
  if best is not None and num_shards > 1:
    spec[best] = 'fsdp'
  return PartitionSpec(*spec)


def fsdp_shardings(state: nnx.State, mesh: jax.sharding.Mesh | None = None
                   ) -> dict[str, NamedSharding]:
  """Our '/'-joined param path -> NamedSharding under the simple fsdp rule."""
  mesh = mesh or fsdp_mesh()
  n = mesh.shape['fsdp']
  out = {}
  for path, var in flat_params(state).items():
    axes = var.get_metadata().get('logical_axes') or (None,) * len(var.shape)
    out[path] = NamedSharding(mesh, fsdp_spec(var.shape, axes, n))
  return out


def flat_shardings(shardings) -> dict[str, jax.sharding.Sharding]:
  """'/'-joined path -> Sharding, from such a dict or from a tree of Shardings
  (e.g. score_jax.training.sharding.param_shardings of the abstract State)."""
  if isinstance(shardings, dict) and all(
      isinstance(v, jax.sharding.Sharding) for v in shardings.values()):
    return dict(shardings)
  leaves = jax.tree_util.tree_flatten_with_path(
      shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]
  out = {}
  for path, leaf in leaves:
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    out['/'.join(n for n in names if n != 'value')] = leaf
  return out


def validate(plan: Plan, reader: Reader, cfg: ModelConfig,
             ignore: Callable[[str], bool] = lambda key: False) -> None:
  """Raises CheckpointError listing every missing, misshapen or unexpected tensor."""
  shapes = reader.shapes()
  wanted: dict[str, tuple[int, ...]] = {}
  for pieces in plan.values():
    for piece in (pieces if isinstance(pieces, list) else [pieces]):
      wanted.update(zip(piece.keys, piece.shapes))
  wrong = [f'key {k!r} has shape {tuple(shapes[k])}; expected {shape}'
           for k, shape in wanted.items() if k in shapes and tuple(shapes[k]) != tuple(shape)]
  missing = [f'key {k!r} missing (expected shape {shape})'
             for k, shape in wanted.items() if k not in shapes]
  embed = plan.get('embedder/input_embedding')
  if isinstance(embed, Piece) and embed.keys[0] in shapes:
    rows, dim = tuple(shapes[embed.keys[0]])[:1], tuple(shapes[embed.keys[0]])[1:]
    if dim == embed.shapes[0][1:] and rows != embed.shapes[0][:1]:
      # Published Gemma 1/2 Flax embeddings have 256128 rows (HF: 256000), Gemma 3
      # multimodal HF ones 262208 (Flax: 262144): the same model, padded vocabularies.
      wrong.append(f'the embedding has {rows[0]} rows: use the preset override '
                   f'vocab_size={rows[0]} for this checkpoint')
  extra = sorted(k for k in shapes if k not in wanted and not ignore(k))
  problems = wrong + ([f'{len(extra)} unexpected key(s), e.g. '
                       + ', '.join(repr(k) for k in extra[:4])] if extra else []) + missing
  if problems:
    shown = '\n  '.join(problems[:12])
    more = f'\n  ... and {len(problems) - 12} more' if len(problems) > 12 else ''
    raise CheckpointError(
        f'{reader.source}: does not match preset {cfg.name!r} ({len(wrong)} wrong '
        f'shape(s), {len(missing)} missing key(s), {len(extra)} unexpected):\n  {shown}{more}')


def _read_piece(piece: Piece, reader: Reader, bar) -> np.ndarray:
  arrays = []
  for key in piece.keys:
    arrays.append(np.asarray(reader.read(key)))
    if bar is not None:
      bar.update(1)
  return np.asarray(piece.combine(*arrays))


def assemble(cfg: ModelConfig, plan: Plan, reader: Reader, *,
             shardings: Mapping[str, jax.sharding.Sharding] | None = None,
             mesh: jax.sharding.Mesh | None = None, progress: bool = False,
             ignore: Callable[[str], bool] = lambda key: False) -> nnx.State:
  """Our param State for `cfg`, read through `plan` and placed sharded per tensor.

  shardings: our param path -> target sharding; default: fsdp_shardings over
  `mesh` (default: all devices).
  """
  _, state = abstract_params(cfg)
  params = flat_params(state)
  missing = sorted(set(params) - set(plan))
  if missing:  # a bug in a plan, not in the file
    raise CheckpointError(f'{reader.source}: no rule for parameter(s) {missing}')
  validate(plan, reader, cfg, ignore)
  shardings = flat_shardings(shardings) if shardings else fsdp_shardings(state, mesh)
  dtype = cfg.jnp_param_dtype
  total = sum(len(p.keys) for ps in plan.values()
              for p in (ps if isinstance(ps, list) else [ps]))
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=total, unit='tensor', desc=f'reading {reader.source}')
  try:
    for path, var in params.items():
      pieces = plan[path]
      if isinstance(pieces, list):
        host = np.stack([_read_piece(p, reader, bar) for p in pieces])
      else:
        host = _read_piece(pieces, reader, bar)
      if host.shape != tuple(var.shape):
        raise CheckpointError(f'{reader.source}: parameter {path!r} came out with shape '
                              f'{host.shape}; expected {tuple(var.shape)}')
      host = host.astype(dtype)
      var.set_value(jax.make_array_from_callback(host.shape, shardings[path],
                                                 lambda idx, h=host: h[idx]))
      del host
  finally:
    if bar is not None:
      bar.close()
  return state


def host_params(state) -> dict[str, np.ndarray]:
  """'/'-joined path -> numpy, from an nnx.State, a Transformer or a pure dict."""
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  if isinstance(state, nnx.State):
    state = state.to_pure_dict()
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
    flat[name] = np.asarray(jax.device_get(leaf))
  return flat
