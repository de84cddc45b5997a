"""Train state, optimizer and their shardings.

The train state is a pytree (step, params, opt_state, rng). The reference params
are NOT part of it: they are frozen, never seen by the optimizer, and passed to
the train step as a separate argument.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from score_jax.training import sharding as sh


@struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer updates applied so far
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array           # PRNG key (raw uint32 data, so it checkpoints as an array)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with linear warm-up then a constant or cosine schedule, and clipping.

  warmup_steps and total_steps count train steps (micro-batches), as the run's
  schedule does. With grad_accum_steps = k the optimizer updates once every k
  train steps, so the learning-rate schedule spans total_steps / k updates.
  """
  learning_rate: float = 1e-5
  warmup_steps: int = 0
  schedule: str = 'constant'      # or 'cosine' (decays to 0 at total_steps)
  total_steps: int = 1000
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  grad_clip_norm: float | None = 1.0
  grad_accum_steps: int = 1

  def __post_init__(self):
    if self.schedule not in ('constant', 'cosine'):
      raise ValueError(f"OptimConfig.schedule={self.schedule!r}; expected 'constant' or "
                       "'cosine'")
    checks = (('learning_rate', self.learning_rate > 0, '> 0'),
              ('warmup_steps', self.warmup_steps >= 0, '>= 0'),
              ('total_steps', self.total_steps >= 0, '>= 0'),
              ('b1', 0 <= self.b1 < 1, 'in [0, 1)'), ('b2', 0 <= self.b2 < 1, 'in [0, 1)'),
              ('eps', self.eps > 0, '> 0'), ('weight_decay', self.weight_decay >= 0, '>= 0'),
              ('grad_clip_norm', self.grad_clip_norm is None or self.grad_clip_norm >= 0,
               '>= 0 or None (0 / None: no clipping)'),
              ('grad_accum_steps', self.grad_accum_steps >= 1, '>= 1'))
    for field, ok, expect in checks:
      if not ok:
        raise ValueError(f'OptimConfig.{field}={getattr(self, field)!r}; expected {expect}')


def learning_rate_schedule(cfg: OptimConfig) -> optax.Schedule:
  """The learning rate as a function of the optimizer's update count.

  optax.MultiSteps advances the inner schedule only on real updates, so train
  step counts are converted to updates here (else a cosine over micro-steps
  would decay only 1/k of the way).
  """
  k = cfg.grad_accum_steps
  warmup = max(cfg.warmup_steps, 0) // k
  total = cfg.total_steps // k
  if cfg.schedule == 'constant':
    main = optax.constant_schedule(cfg.learning_rate)
  else:
    main = optax.cosine_decay_schedule(cfg.learning_rate, max(total - warmup, 1))
  if not warmup:
    return main
  ramp = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  parts.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay))
  tx = optax.chain(*parts)
  if cfg.grad_accum_steps > 1:
    # Accumulates k micro-batch gradients and applies one averaged update.
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
  return tx


def _is_var(x):
  return isinstance(x, nnx.Variable)


def state_shardings(params: nnx.State, tx: optax.GradientTransformation, mesh: Mesh,
                    rules: sh.Rules) -> TrainState:
  """Shardings for every leaf of the TrainState: optimizer moments follow params."""
  replicated = NamedSharding(mesh, P())
  p_shard = sh.param_shardings(params, rules, mesh)
  abstract_opt = jax.eval_shape(tx.init, params)
  opt_shard = optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt, p_shard,
      transform_non_params=lambda _: replicated, is_leaf=_is_var)
  return TrainState(step=replicated, params=p_shard, opt_state=opt_shard, rng=replicated)


def init_train_state(params: nnx.State, tx: optax.GradientTransformation, rng: jax.Array,
                     shardings: TrainState) -> TrainState:
  """Places params and builds the optimizer state directly in its sharded layout."""
  def build(params, rng):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=rng)
  rng_data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  return jax.jit(build, out_shardings=shardings)(params, rng_data)
