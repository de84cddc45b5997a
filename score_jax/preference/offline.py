"""DPO on a fixed set of preference pairs (e.g. a JSONL file), against a frozen reference.

The offline counterpart of the trainer's online `dpo` stage: same jitted step
(training.step, stage 'dpo'), same optimizer, shardings and metrics; minibatches
of pairs are drawn without replacement, epoch after epoch, from a seeded order.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np
from flax import nnx

from score_jax import config as config_lib
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from score_jax.batches import PairBatch
from score_jax.training.experiment import Experiment, to_global
from score_jax.training.metric_log import MetricsWriter, finite_or_raise, progress


def pair_minibatches(batch: PairBatch, pairs_per_step: int,
                     seed: int) -> Iterator[PairBatch]:
  """Endless seeded DPO minibatches of `pairs_per_step` pairs from a packed DPO batch."""
  n = len(batch.weight_B) // 2
  if n < pairs_per_step:
    raise ValueError(f'DPO data has {n} pairs; fewer than pairs_per_step={pairs_per_step}')
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(n)
    for i in range(0, n - pairs_per_step + 1, pairs_per_step):
      rows = np.concatenate([order[i:i + pairs_per_step], n + order[i:i + pairs_per_step]])
      yield jax.tree.map(lambda v, rows=rows: np.asarray(v)[rows], batch)


def train_pairs(exp: Experiment, params: nnx.State, ref_params: nnx.State,
                batch: PairBatch, *,
                steps: int, pairs_per_step: int, seed: int = 0,
                phase: str = 'dpo_pairs') -> nnx.State:
  """`steps` DPO updates of `params` on the pairs of `batch` (preference.data.pack_pairs)."""
  if jax.process_count() > 1:
    raise ValueError('train_pairs runs on one process; use the online dpo stage on several')
  optim = dataclasses.replace(config_lib.optim_config(exp.cfg), total_steps=steps)
  tx = state_lib.make_optimizer(optim)
  shardings = state_lib.state_shardings(params, tx, exp.mesh, exp.strategy.rules)
  state = state_lib.init_train_state(params, tx, jax.random.key(seed), shardings)
  ref_params = jax.device_put(ref_params, shardings.params)
  loss_cfg = config_lib.dpo_config(exp.cfg)
  writer = MetricsWriter(exp.workdir / phase)
  batches = pair_minibatches(batch, pairs_per_step, seed)
  fn, bar = None, progress(steps, phase)
  try:
    for step in range(1, steps + 1):
      mb = to_global(next(batches), exp)
      if fn is None:
        fn = step_lib.compile_step(exp.graphdef, tx, loss_cfg, 'dpo', exp.mesh,
                                   exp.strategy.rules, shardings, shardings.params, mb)
      state, metrics = fn(state, ref_params, mb)
      if step % max(exp.cfg.train.log_every, 1) == 0 or step == steps:
        host = finite_or_raise(metrics, phase, step)
        writer.write(phase, step, host)
        bar.set_postfix(loss=f'{host["loss"]:.3f}', acc=f'{host["dpo/reward_accuracy"]:.2f}')
      bar.update(1)
  finally:
    bar.close()
    writer.close()
  return state.params
