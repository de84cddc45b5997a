"""score_jax: SCoRe (Kumar et al., arXiv 2409.12917) in JAX/Flax NNX.

The public API (see README, "Use it as a library"):

  load_config(path)                 a config file -> ConfigDict
  task(problems, prompt, reward)    a Task from plain callables (FunctionTask)
  Experiment(cfg, task=...)         tokenizer, model, mesh and samplers of a run
  load_model(preset | path)         (ModelConfig, params): preset, checkpoint, HF dir
  sample(exp, params)               two decoded, scored attempts per problem
  train(exp, params)                Stage I / Stage II (the config's schedule)
  evaluate(exp, params)             the paper's metrics: acc_t1, acc_t2, delta, ...
  load_trained(exp)                 a train() checkpoint's params, no optimizer
  save_params / load_params         params to and from an Orbax directory

The loop's own parts, for a user who assembles a run by hand:
  TwoAttempts, Attempts             sampler + correction turn + reward -> scored attempts
  PromptBatch, ScoreBatch, SftBatch, PairBatch   the typed batches (pytrees)
  ScoreParts, LoopConfig, run_loop  the SCoRe loop on explicit parts (training/loop.py)

Names resolve on first use, so `import score_jax` does not import JAX.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = '0.1.0'

# public name -> module that defines it
_EXPORTS = {
    'load_config': 'score_jax.api', 'task': 'score_jax.api', 'load_model': 'score_jax.api',
    'sample': 'score_jax.api', 'TwoTurns': 'score_jax.api', 'train': 'score_jax.api',
    'evaluate': 'score_jax.api', 'load_trained': 'score_jax.api',
    'save_params': 'score_jax.api', 'load_params': 'score_jax.api',
    'Experiment': 'score_jax.training.experiment',
    'ScoreResult': 'score_jax.training.trainer',
    'Task': 'score_jax.data.tasks', 'make_task': 'score_jax.data.tasks',
    'FunctionTask': 'score_jax.data.function_task',
    'ModelConfig': 'score_jax.models.config', 'get_preset': 'score_jax.models.config',
    'Sampler': 'score_jax.sampling.rollout', 'SamplingConfig': 'score_jax.sampling.config',
    'TwoAttempts': 'score_jax.training.attempts', 'Attempts': 'score_jax.training.attempts',
    'PromptBatch': 'score_jax.batches', 'ScoreBatch': 'score_jax.batches',
    'SftBatch': 'score_jax.batches', 'PairBatch': 'score_jax.batches',
    'ScoreParts': 'score_jax.training.loop', 'LoopConfig': 'score_jax.training.loop',
    'run_loop': 'score_jax.training.loop',
}

# public name -> its name in the defining module, where they differ
_ALIASES = {'run_loop': 'run'}

__all__ = sorted(_EXPORTS) + ['__version__']

if TYPE_CHECKING:
  from score_jax.api import (TwoTurns, evaluate, load_config, load_model, load_params,
                             load_trained, sample, save_params, task, train)
  from score_jax.data.function_task import FunctionTask
  from score_jax.data.tasks import Task, make_task
  from score_jax.models.config import ModelConfig, get_preset
  from score_jax.sampling.config import SamplingConfig
  from score_jax.sampling.rollout import Sampler
  from score_jax.training.experiment import Experiment
  from score_jax.batches import PairBatch, PromptBatch, ScoreBatch, SftBatch
  from score_jax.training.attempts import Attempts, TwoAttempts
  from score_jax.training.loop import LoopConfig, ScoreParts
  from score_jax.training.loop import run as run_loop
  from score_jax.training.trainer import ScoreResult


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f'module score_jax has no attribute {name!r}')
  module = importlib.import_module(_EXPORTS[name])
  value = getattr(module, _ALIASES.get(name, name))
  globals()[name] = value   # resolved once
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
