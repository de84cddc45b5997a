"""Builds what a run needs from its config: task, tokenizer, model, mesh, sampler.

Also what every phase shares: two attempts scored by the task's reward
(`two_attempts`, see attempts.py) and evaluating a policy on held-out problems
with the paper's metrics.

Several processes: each process samples and scores its own prompt rows, with a
process-local copy of the weights (`for_sampling`) and its own random stream
(attempts.process_key); evaluation gathers every process's rows before the metrics.
"""
from __future__ import annotations

import pathlib
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from score_jax import config as config_lib
from score_jax import evaluation
from score_jax.data import prompt_format as prompt_format_lib
from score_jax.data import tasks as tasks_lib
from score_jax.data.pipeline import PromptPipeline
from score_jax.data.tokenizer import Tokenizer, train_sentencepiece
from score_jax.models import create_model, get_preset
from score_jax.sampling.config import SamplingConfig
from score_jax.sampling.rollout import Sampler
from score_jax.training import sharding as sh
from score_jax.training.attempts import TwoAttempts


def build_tokenizer(cfg: ml_collections.ConfigDict, task: tasks_lib.Task,
                    workdir: pathlib.Path) -> Tokenizer:
  """Loads config.tokenizer.path, or trains a small one on the task's corpus (cached)."""
  if cfg.tokenizer.path:
    path = config_lib.resolve_path(cfg.tokenizer.path)
    if not path.is_file():
      raise FileNotFoundError(f'config.tokenizer.path: {path} does not exist')
    return Tokenizer(str(path))
  if not hasattr(task, 'tokenizer_corpus'):
    raise ValueError(f'config.tokenizer.path is empty and task {task.name!r} has no '
                     'corpus to train one on; point it at a sentencepiece .model')
  target = workdir / 'tokenizer.model'
  # Several processes: process 0 writes it first, so a shared workdir never shows
  # the others a half-written file (on unshared disks each trains the same one).
  several, leader = jax.process_count() > 1, jax.process_index() == 0
  if several and not leader:
    multihost_utils.sync_global_devices('build_tokenizer')
  if not target.is_file():
    workdir.mkdir(parents=True, exist_ok=True)
    tok = train_sentencepiece(task.tokenizer_corpus(), cfg.tokenizer.vocab_size,
                              str(workdir / 'tokenizer'))
    logging.info('trained a %d-piece tokenizer at %s', tok.vocab_size, target)
  if several and leader:
    multihost_utils.sync_global_devices('build_tokenizer')
  return Tokenizer(str(target))


class Experiment:
  """The objects of one run, built once. Holds no training state."""

  def __init__(self, cfg: ml_collections.ConfigDict, task: tasks_lib.Task | None = None):
    """`task` overrides config.task (for tasks not in the registry)."""
    self.cfg = cfg
    self.workdir = config_lib.resolve_path(cfg.workdir)
    config_lib.validate(cfg)   # the whole config, before any data or model work
    self.task = task or tasks_lib.make_task(cfg.task.name, **cfg.task.fields.to_dict())
    self._pretrained = None
    if cfg.model.checkpoint:
      # Open weights: the preset is checked against the file; the tokenizer comes
      # from config.tokenizer.path, else from the checkpoint (GGUF vocabulary).
      from score_jax.models.checkpoints import load_pretrained  # pylint: disable=g-import-not-at-top
      self.model_cfg, self._pretrained, tokenizer = load_pretrained(cfg.model)
      if cfg.tokenizer.path:
        tokenizer = build_tokenizer(cfg, self.task, self.workdir)
      if tokenizer is None:
        raise ValueError(f'config.tokenizer.path is empty and {cfg.model.checkpoint} '
                         'carries no tokenizer; point config.tokenizer.path at its .model')
      self.tokenizer = tokenizer
    else:
      self.tokenizer = build_tokenizer(cfg, self.task, self.workdir)
      overrides = cfg.model.overrides.to_dict()
      overrides.setdefault('vocab_size', self.tokenizer.vocab_size)
      self.model_cfg = get_preset(cfg.model.preset, **overrides)
    if self.model_cfg.vocab_size < self.tokenizer.vocab_size:
      raise ValueError(f'model vocab_size {self.model_cfg.vocab_size} < tokenizer '
                       f'vocab_size {self.tokenizer.vocab_size} (config.model)')
    self.graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: create_model(self.model_cfg, rngs=nnx.Rngs(0))))

    shape = tuple(cfg.mesh.shape) or None
    self.strategy = sh.get_strategy(cfg.mesh.strategy, shape)
    self.mesh = sh.make_mesh(self.strategy.mesh_shape)
    self.stop_ids: tuple[int, ...] = ()
    self._samplers: dict[float, Sampler] = {}
    self.set_task(self.task)

  def set_task(self, task: tasks_lib.Task) -> None:
    """Makes `task` (its prompt format, correction chunk, stop ids) the run's task.

    Samplers are kept (and their compilations reused) while the stop ids stay.
    """
    self.task = task
    self.prompt_format = prompt_format_lib.for_task(task)
    self.chunk_ids = self.prompt_format.chunk_ids(self.tokenizer, task.correction_instruction)
    stop_ids = self.prompt_format.stop_ids(self.tokenizer)
    if stop_ids != self.stop_ids:
      self.stop_ids, self._samplers = stop_ids, {}

  # --------------------------------------------------------------------- model

  def init_params(self, seed: int) -> nnx.State:
    """The configured checkpoint's params, or a random init; laid out for training."""
    if self._pretrained is not None:
      return jax.device_put(self._pretrained, self.param_shardings(self._pretrained))
    # One jitted init writes each param straight into its shard (and compiles once
    # instead of dispatching every initializer op by op).
    make = lambda: nnx.state(create_model(self.model_cfg, rngs=nnx.Rngs(seed)))
    return jax.jit(make, out_shardings=self.param_shardings(nnx.eval_shape(make)))()

  def param_shardings(self, params, for_sampling: bool = False):
    rules = self.strategy.rules
    if for_sampling and self.strategy.sample_rules is not None:
      rules = self.strategy.sample_rules
    return sh.param_shardings(params, rules, self.mesh)

  def for_sampling(self, params):
    """The sampler's copy of the weights (sharding.for_sampling)."""
    return sh.for_sampling(params, self.mesh, self.strategy)

  # --------------------------------------------------------------------- sampling

  def sampler(self, temperature: float) -> Sampler:
    if temperature not in self._samplers:
      s = self.cfg.sampling
      self._samplers[temperature] = Sampler(self.graphdef, SamplingConfig(
          stop_ids=self.stop_ids, pad_id=self.tokenizer.pad_id, temperature=temperature,
          top_k=s.top_k or None, top_p=None if s.top_p >= 1.0 else s.top_p,
          max_y1_tokens=s.max_y1_tokens, max_y2_tokens=s.max_y2_tokens,
          prompt_buckets=tuple(self.cfg.data.buckets)))
    return self._samplers[temperature]

  def pipeline(self, examples: Sequence[Any], batch_size: int, *, seed: int,
               train: bool) -> PromptPipeline:
    return PromptPipeline(examples, self.task, self.tokenizer, batch_size=batch_size,
                          buckets=tuple(self.cfg.data.buckets), seed=seed, shuffle=train,
                          num_epochs=None if train else 1, drop_remainder=train,
                          overlong=self.cfg.data.overlong)

  def two_attempts(self, temperature: float) -> TwoAttempts:
    """Samples two attempts at `temperature` and scores them with the task's reward."""
    return TwoAttempts(self.sampler(temperature), self.chunk_ids, self.tokenizer,
                       self.prompt_format, self.task.rewards)

  def evaluate(self, params, *, split: str | None = None, num_problems: int | None = None,
               temperature: float = 0.0, seed: int = 0) -> dict:
    """The paper's metrics of the two-turn protocol on held-out problems."""
    examples = self.task.load_examples(split or self.cfg.eval.split)
    n = min(num_problems or self.cfg.eval.num_problems, len(examples))
    return self.evaluate_examples(params, examples[:n], temperature=temperature, seed=seed)

  def evaluate_examples(self, params, examples: Sequence[Any], *, temperature: float,
                        seed: int = 0, keep_ids: bool = False) -> dict:
    """Two attempts at each of `examples` (indices must address them) and the metrics.

    keep_ids: also return each row's y1 / y2 token ids (keys 'y1', 'y2').
    """
    ecfg = self.cfg.eval
    examples = tasks_lib.reindex(examples)
    sample_params = self.for_sampling(params)
    r1, r2, y1s, y2s = [], [], [], []
    key = jax.random.key(seed)
    attempts = self.two_attempts(temperature)
    for i, prompts in enumerate(self.pipeline(examples, ecfg.batch_size, seed=seed,
                                              train=False)):
      at = attempts(sample_params, prompts, examples, jax.random.fold_in(key, i))
      keep = at.real_B
      r1.append(at.r1_B[keep])
      r2.append(at.r2_B[keep])
      y1s += [y for y, k in zip(at.y1_ids, keep) if k]
      y2s += [y for y, k in zip(at.y2_ids, keep) if k]
    r1, r2 = np.concatenate(r1), np.concatenate(r2)
    if jax.process_count() > 1:
      r1, r2, y1s, y2s = _gather_rows(r1, r2, y1s, y2s)
    summary = evaluation.summarize(r1, r2, y1s, y2s, bootstrap_seed=seed,
                                   num_resamples=ecfg.bootstrap_resamples)
    summary.update(temperature=temperature, r1=r1, r2=r2)
    if keep_ids:
      summary.update(y1=y1s, y2=y2s)
    return summary


def _gather_rows(r1, r2, y1s, y2s):
  """Every process's (r1, r2, y1, y2) rows, in process order, on every process."""
  n = len(r1)
  cap = int(np.max(multihost_utils.process_allgather(np.int32(n))))
  width = max([len(y) for y in y1s + y2s] + [1])
  width = int(np.max(multihost_utils.process_allgather(np.int32(width))))

  def ids(seqs):  # (cap, width) int32, -1 after each sequence
    out = np.full((cap, width), -1, np.int32)
    for i, y in enumerate(seqs):
      out[i, :len(y)] = y
    return out

  pad = lambda r: np.pad(np.asarray(r, np.float32), (0, cap - n))
  g = multihost_utils.process_allgather(
      {'n': np.int32(n), 'r1': pad(r1), 'r2': pad(r2), 'y1': ids(y1s), 'y2': ids(y2s)})
  g = jax.tree.map(np.asarray, g)
  rows = [(p, i) for p in range(len(g['n'])) for i in range(int(g['n'][p]))]
  unpad = lambda y: [int(t) for t in y if t >= 0]
  return (np.array([g['r1'][p, i] for p, i in rows], np.float32),
          np.array([g['r2'][p, i] for p, i in rows], np.float32),
          [unpad(g['y1'][p, i]) for p, i in rows], [unpad(g['y2'][p, i]) for p, i in rows])


def to_global(batch, exp: Experiment):
  """Host rows -> global arrays sharded over the mesh's batch axes."""
  return sh.host_local_batch_to_global(batch, exp.mesh, exp.strategy.rules)
