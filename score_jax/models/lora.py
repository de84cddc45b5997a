"""LoRA as a pure param transform: adapters pytree + merge(base, adapters) -> params.

Low-rank adapters on the attention and MLP projections of the stacked layers.
For a weight W (layers first, e.g. q_einsum/w of shape L x D x N x H) the
adapter is a pair A (L x in x r), B (L x r x out) over W's input axes (D) and
output axes (N, H), and the policy's weight is

    W' = W + (alpha / rank) * A @ B        (einsum over the rank axis)

B starts at zero, so the adapted model starts as the base. The Transformer is
untouched: the train step calls `merge` inside its loss, so gradients reach only
the adapters, and the base (the frozen reference, passed as ref_params) is read,
never copied into the optimizer or the checkpoint. The KL reference is the same
forward with the adapters off: the base itself. `merge` also gives the full
params that sampling, evaluation and the exporters take.
"""
from __future__ import annotations

import dataclasses
import math
import string
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# Adapted weight (under layers/) -> the axes of W (after the layers axis, 0) that
# are its input; the other axes are its output.
TARGETS = {
    'attn/q_einsum/w': (1,),            # L D N H: D -> (N, H)
    'attn/kv_einsum/w': (1,),           # L D 2 K H: D -> (2, K, H)
    'attn/qkv_einsum/w': (1,),          # L D 3 N H: D -> (3, N, H)
    'attn/k_einsum/w': (1,),            # L D K H: D -> (K, H) (Gemma 4's k == v layers)
    'attn/attn_vec_einsum/w': (1, 2),   # L N H D: (N, H) -> D
    'mlp/gating_einsum': (1,),          # L D 2 F: D -> (2, F)
    'mlp/linear': (1,),                 # L F D: F -> D
}
_ADAPTERS = ('a', 'b')


def _in_axes(name: str) -> tuple[int, ...]:
  """Input axes of the adapted weight '<stack>/<target>' (Gemma 1-3's 'layers' or
  Gemma 4's per-kind 'layers_<kind>': the same stored layout)."""
  return TARGETS[name.partition('/')[2]]


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank 0: no adapters (full fine-tuning). targets: keys of TARGETS."""
  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = tuple(TARGETS)

  def __post_init__(self):
    object.__setattr__(self, 'targets', tuple(self.targets))
    if self.rank < 0:
      raise ValueError(f'config.lora.rank={self.rank}; expected >= 0 (0: full fine-tuning)')
    unknown = sorted(set(self.targets) - set(TARGETS))
    if unknown:
      raise ValueError(f'config.lora.targets: unknown {unknown}; expected some of '
                       f'{sorted(TARGETS)}')

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def _path_key(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _adapted(base: nnx.State, targets: Sequence[str]) -> dict[str, nnx.Variable]:
  """'layers/<target>' -> the base Variable, for the targets this model has."""
  flat = {'/'.join(map(str, p)): v for p, v in nnx.to_flat_state(base)}
  found = {}
  for name, var in flat.items():  # 'layers' (Gemma 1-3) or Gemma 4's 'layers_<kind>'
    stack, _, rest = name.partition('/')
    if (stack == 'layers' or stack.startswith('layers_')) and rest in targets:
      found[name] = var
  if not found:
    raise ValueError(f'lora: none of the targets {list(targets)} is a param of this model')
  return found


def _letters(ndim: int, in_axes: Sequence[int]) -> tuple[str, str, str]:
  """einsum operands (A, B, W) for a weight of ndim axes, layers first."""
  w = string.ascii_lowercase[:ndim]
  outs = [i for i in range(1, ndim) if i not in in_axes]
  return (w[0] + ''.join(w[i] for i in in_axes) + 'z',
          w[0] + 'z' + ''.join(w[i] for i in outs), w)


def init(base: nnx.State, cfg: LoraConfig, key: jax.Array) -> nnx.State:
  """Fresh adapters: A ~ Normal(0, 1/fan_in), B = 0 (the model starts as the base).

  A and B are float32 Params whose logical axes follow W's (layers, input
  axes, None) and (layers, None, output axes), so they shard like the base.
  """
  if not cfg.enabled:
    raise ValueError('lora.init: config.lora.rank is 0; expected >= 1')
  tree: dict = {}
  for i, (name, var) in enumerate(sorted(_adapted(base, cfg.targets).items())):
    in_axes = _in_axes(name)
    shape, axes = var.shape, var.get_metadata()['logical_axes']
    outs = [j for j in range(1, len(shape)) if j not in in_axes]
    fan_in = math.prod(shape[j] for j in in_axes)
    a_shape = (shape[0], *(shape[j] for j in in_axes), cfg.rank)
    a = jax.random.normal(jax.random.fold_in(key, i), a_shape, jnp.float32) * fan_in**-0.5
    b = jnp.zeros((shape[0], cfg.rank, *(shape[j] for j in outs)), jnp.float32)
    node = tree
    for part in name.split('/'):
      node = node.setdefault(part, {})
    node['a'] = nnx.Param(a, logical_axes=(axes[0], *(axes[j] for j in in_axes), None))
    node['b'] = nnx.Param(b, logical_axes=(axes[0], None, *(axes[j] for j in outs)))
  return nnx.State(tree)


def delta(a, b, in_axes: Sequence[int], ndim: int) -> jax.Array:
  """A @ B laid out as the weight (float32)."""
  sa, sb, sw = _letters(ndim, in_axes)
  return jnp.einsum(f'{sa},{sb}->{sw}', jnp.asarray(a, jnp.float32),
                    jnp.asarray(b, jnp.float32))


def merge(base: nnx.State, adapters: nnx.State, scale: float) -> nnx.State:
  """The params of the adapted model: W + scale * A @ B on every adapted weight.

  Pure and differentiable in both arguments; a new State, `base` is unchanged.
  Each merged weight keeps the base weight's dtype and metadata.
  """
  pairs = {}
  for path, var in nnx.to_flat_state(adapters):
    *name, which = map(str, path)
    pairs.setdefault('/'.join(name), {})[which] = var[...]

  def one(path, var):
    name = _path_key(path)
    if name not in pairs:
      return var
    w = var[...]
    d = delta(pairs[name]['a'], pairs[name]['b'], _in_axes(name), w.ndim)
    return var.replace((w.astype(jnp.float32) + scale * d).astype(w.dtype))

  unknown = set(pairs) - {'/'.join(map(str, p)) for p, _ in nnx.to_flat_state(base)}
  if unknown:
    raise ValueError(f'lora.merge: adapters for {sorted(unknown)}, which the base lacks')
  return jax.tree_util.tree_map_with_path(one, base,
                                          is_leaf=lambda x: isinstance(x, nnx.Variable))


def on_base(loss_fn, scale: float):
  """loss_fn(params, ref_params, batch) -> loss_fn(adapters, base, batch).

  The policy is merge(base, adapters); the reference is the base itself.
  """
  def fn(adapters, base, batch):
    return loss_fn(merge(base, adapters, scale), base, batch)
  return fn
