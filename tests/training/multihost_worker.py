"""One process of tests/training/test_multihost.py, or the one-process reference.

As a worker (`python tests/training/multihost_worker.py --coordinator_address=...
--num_processes=2 --process_id=P --out=...`), through launch/common.py's
distributed start-up: SCoRe steps 1-2 of a tiny run (then "killed": Orbax saves
collectively), a fresh Experiment resuming from the checkpoint for step 3, and
a tensor-parallel batch check. Process 0 writes the results to --out (.npz).

In-process (`reference(workdir)`): the same three steps in one process over the
8 devices of the mesh, fed the same global data. `TwoProcessReference` stands
in for the two workers: each step's batch is worker 0's rows then worker 1's,
and each half is sampled with that worker's stream (attempts.process_key).
"""
from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:   # run as a script from anywhere
  sys.path.insert(0, str(REPO))

import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import functools  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from score_jax.data import synthetic
from score_jax.data.pipeline import PromptPipeline
from score_jax.training import sharding as sh
from score_jax import batches as batches_lib
from score_jax.training.attempts import Attempts, TwoAttempts
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_score
from tests.training.tiny_config import tiny_config

NUM_WORKERS = 2
STRATEGY = 'fsdp_tp'   # mesh (1, 4, 2): fsdp spans the two processes, tensor within one
SCHEDULE = (('stage1', 2), ('stage2', 1))


def config(workdir):
  c = tiny_config(workdir)        # one bucket: every process's prompts share a width
  c.task.fields.num_train = 36     # + num_test <= the 55 distinct 1-digit additions
  c.task.fields.num_test = 16
  c.data.batch_size = 2           # prompts per process per step; x 4 samples = 8 rows,
                                  # 16 in the global batch
  c.train.schedule = SCHEDULE
  c.optim.learning_rate = 1e-2
  # Adam divides by sqrt(v) + eps: a large eps keeps near-zero gradient entries'
  # updates ~ linear in the gradient, so reduction-order noise is not amplified.
  c.optim.eps = 1e-3
  # checkpoint.every = 100 (tiny_config): saves only where a call stops.
  # Asynchronous, as configs default to: the 'latest' and 'best' managers save the
  # same step, which needs distinct barrier keys across processes (checkpoint.py).
  c.checkpoint.async_save = True
  c.eval.num_problems = 16        # 8 per process: one batch of the training rows' shape
  c.eval.batch_size = 8
  c.eval.bootstrap_resamples = 100
  c.mesh.strategy = STRATEGY
  return c


@dataclasses.dataclass(frozen=True)
class ParityBandit(synthetic.SyntheticArithmeticTask):
  """Reward 1 for a response of odd length: about half of a random policy's samples,
  so advantages, gradients and updates are far from zero and depend on the samples."""
  name: str = 'parity_bandit'

  def reward(self, example, response):
    return float(len(response) % 2)


def task(cfg):
  return ParityBandit(**cfg.task.fields.to_dict())


def worker_experiment(cfg):
  return Experiment(cfg, task=task(cfg))


def reference_experiment(cfg):
  return TwoProcessReference(cfg, task=task(cfg))


class _Zip:
  """Iterator over the row-concatenation of several pipelines' batches."""

  def __init__(self, pipelines):
    self.its = [iter(p) for p in pipelines]

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.its]
    return functools.reduce(batches_lib.concat, parts)

  def get_state(self):
    return {str(i): it.get_state() for i, it in enumerate(self.its)}

  def set_state(self, state):
    for i, it in enumerate(self.its):
      it.set_state(state[str(i)])


class TwoProcessReference(Experiment):
  """One process doing the two workers' data and sampling (training batches only)."""

  def pipeline(self, examples, batch_size, *, seed, train):
    if not train:
      return super().pipeline(examples, batch_size, seed=seed, train=train)
    return _Zip([PromptPipeline(
        examples, self.task, self.tokenizer, batch_size=batch_size,
        buckets=tuple(self.cfg.data.buckets), seed=seed, shuffle=True, num_epochs=None,
        drop_remainder=True, overlong=self.cfg.data.overlong, process_index=p,
        process_count=NUM_WORKERS) for p in range(NUM_WORKERS)])

  def two_attempts(self, temperature):
    at = super().two_attempts(temperature)
    return TwoWorkerAttempts(**{f.name: getattr(at, f.name) for f in dataclasses.fields(at)})


@dataclasses.dataclass(frozen=True)
class TwoWorkerAttempts(TwoAttempts):
  """Each worker's half of the rows, sampled with that worker's stream."""

  def __call__(self, params, prompts, examples, key, **kw):
    n = batches_lib.num_rows(prompts) // NUM_WORKERS
    half = lambda x, p: None if x is None else x[p * n:(p + 1) * n]
    parts = [super(TwoWorkerAttempts, self).__call__(
        params, jax.tree.map(lambda x, p=p: x[p * n:(p + 1) * n], prompts), examples,
        jax.random.fold_in(key, p), **{k: half(v, p) for k, v in kw.items()})
        for p in range(NUM_WORKERS)]
    cat = lambda *xs: np.concatenate([np.asarray(x) for x in xs])
    return Attempts(
        trace=jax.tree.map(cat, *[a.trace for a in parts]),
        r1_B=cat(*[a.r1_B for a in parts]), r2_B=cat(*[a.r2_B for a in parts]),
        real_B=cat(*[a.real_B for a in parts]),
        y1_ids=sum([a.y1_ids for a in parts], []), y2_ids=sum([a.y2_ids for a in parts], []))


def run(make_exp, cfg) -> dict[str, np.ndarray]:
  """Steps 1-2, a checkpoint, then step 3 resumed by a fresh Experiment; greedy eval."""
  exp = make_exp(cfg)
  base = exp.init_params(0)
  first = train_score(exp, base, base, stop_after=2)
  exp = make_exp(cfg)
  resumed = train_score(exp, base, base)
  summary = exp.evaluate(resumed.params, temperature=0.0)
  assert (first.steps, resumed.steps) == (2, 3), (first.steps, resumed.steps)
  history = first.history + resumed.history
  params = multihost_gather(resumed.params)
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  out = {'param/' + jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}
  for key in ('loss', 'acc_t1', 'acc_t2', 'grad_norm'):
    out['history/' + key] = np.array([h[key] for h in history])
  for key in ('n', 'acc_t1', 'acc_t2', 'delta', 'delta_i_to_c', 'edit_ratio'):
    out['eval/' + key] = np.array(summary[key], np.float64)
  return out


def multihost_gather(tree):
  """Host numpy copies of every (global) array, on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def tensor_parallel_batch_check() -> bool:
  """Under pure TP the batch is replicated: every process must see ALL rows."""
  mesh = sh.make_mesh(sh.STRATEGIES['tp'].mesh_shape)
  rows = np.arange(6).reshape(3, 2) + 100 * jax.process_index()
  g = sh.host_local_batch_to_global({'x': rows}, mesh, sh.STRATEGIES['tp'].rules)['x']
  want = np.concatenate([np.arange(6).reshape(3, 2) + 100 * p
                         for p in range(jax.process_count())])
  return g.shape == want.shape and np.array_equal(np.asarray(g), want)


def reference(workdir) -> dict[str, np.ndarray]:
  return run(reference_experiment, config(workdir))


def _main(argv):
  del argv
  import common  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  cfg = config(flags.FLAGS.workdir)
  common.maybe_initialize_distributed(cfg)
  assert jax.process_count() == NUM_WORKERS and jax.device_count() == 8, (
      jax.process_count(), jax.device_count())
  out = run(worker_experiment, cfg)
  out['tp_batch_ok'] = np.array(tensor_parallel_batch_check())
  if jax.process_index() == 0:
    np.savez(flags.FLAGS.out, **out)
  print(f'process {jax.process_index()}: done', flush=True)


if __name__ == '__main__':
  sys.path.insert(0, str(REPO / 'launch'))
  import common  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Shared run directory.', required=True)
  flags.DEFINE_string('out', None, 'Results (.npz), written by process 0.', required=True)
  common.run(_main)
