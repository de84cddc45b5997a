"""The library's verbs: config, task, model, sample, train, evaluate, save and load.

Each is a thin, typed layer over the modules that do the work (Experiment,
Sampler, train_score, Checkpointer, models.checkpoints), re-exported by
`score_jax` itself:

  cfg = score_jax.load_config('configs/tiny.py')
  exp = score_jax.Experiment(cfg, task=score_jax.task(problems, prompt, reward))
  base = exp.init_params(0)
  result = score_jax.train(exp, base)            # the config's Stage I / II schedule
  score_jax.evaluate(exp, result.params)['acc_t2']
"""
from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from score_jax import config as config_lib
from score_jax.config import ConfigError
from score_jax.data import tasks
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.data.function_task import PAPER_CORRECTION_INSTRUCTION, FunctionTask
from score_jax.models import checkpoints as model_ckpt
from score_jax.models.checkpoints.pretrained import config_from_checkpoint
from score_jax.models.config import PRESETS, ModelConfig, get_preset
from score_jax.models.factory import create_model
from score_jax.training import build, trainer
from score_jax.training.checkpoint import Checkpointer, CheckpointConfig
from score_jax.training.experiment import Experiment


def load_config(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The ConfigDict of a config file (a .py defining get_config(), e.g. configs/tiny.py)."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise ConfigError(f'config file {path} does not exist; expected a .py with get_config()')
  spec = importlib.util.spec_from_file_location(f'score_jax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'config file {path} defines no get_config()')
  return module.get_config()


def task(problems: Sequence[Any], prompt: Callable[[Any], str],
         reward: Callable[[Any, str], float],
         correction: str = PAPER_CORRECTION_INSTRUCTION, *,
         test_problems: Sequence[Any] | None = None,
         answer: Callable[[str], str | None] | None = None,
         name: str = 'function_task') -> FunctionTask:
  """A task from plain callables (see score_jax.data.function_task).

  Args:
    problems: training problems, e.g. a list of dicts or strings.
    prompt: problem -> first-turn question.
    reward: (problem, completion text) -> reward in [0, 1]; the completion is
      decoded text without its closing <end_of_turn>.
    correction: the self-correction instruction (default: the paper's).
    test_problems: held-out problems for evaluate(); None: `problems`.
    answer: completion -> its answer (majority votes); None: the completion.
    name: the task's name in logs.
  """
  return FunctionTask(problems=problems, prompt_fn=prompt, reward_fn=reward,
                      correction_instruction=correction, test_problems=test_problems,
                      answer_fn=answer, name=name)


def load_model(source: str | pathlib.Path, *, seed: int = 0,
               **overrides: Any) -> tuple[ModelConfig, nnx.State]:
  """(ModelConfig, params) from a preset name, a checkpoint, or an HF directory.

  A preset (models.PRESETS, e.g. 'gemma3_tiny') gives random weights drawn from
  `seed`. A path: a Flax / Orbax / safetensors / GGUF checkpoint or an HF model
  directory, its config read from the config.json beside it. `overrides`:
  ModelConfig fields (e.g. dtype='float32').
  """
  if str(source) in PRESETS:
    cfg = get_preset(str(source), **overrides)
    return cfg, nnx.state(create_model(cfg, rngs=nnx.Rngs(seed)))
  path = model_ckpt.resolve_checkpoint(str(source))
  if not path.exists():
    raise FileNotFoundError(f'model {source}: neither a preset ({", ".join(sorted(PRESETS))}) '
                            'nor an existing checkpoint path')
  cfg = config_from_checkpoint(path, **overrides)
  return cfg, model_ckpt.load_params(path, cfg)


def save_params(path: str | pathlib.Path, params: nnx.State) -> pathlib.Path:
  """Writes params as an Orbax checkpoint directory; load_params reads it back."""
  return model_ckpt.save_orbax(path, params)


def load_params(path: str | pathlib.Path, model_cfg: ModelConfig) -> nnx.State:
  """Params of `model_cfg` from a checkpoint in any supported format (shape-checked)."""
  return model_ckpt.load_params(path, model_cfg)


@dataclasses.dataclass(frozen=True)
class TwoTurns:
  """One problem's two attempts: y1, then y2 after the correction instruction.

  y1, y2: each attempt's response text without surrounding whitespace and the
  closing `<end_of_turn>`, the text a FunctionTask's reward_fn reads.
  """
  problem: Any          # the task's example (FunctionTask: Problem(index, value))
  y1: str
  y2: str
  r1: float             # the task's reward of y1
  r2: float


def sample(exp: Experiment, params: nnx.State, examples: Sequence[Any] | None = None, *,
           split: str = 'test', temperature: float = 0.0, seed: int = 0,
           batch_size: int | None = None) -> list[TwoTurns]:
  """Two attempts at each example (default: the task's `split`), decoded and scored.

  One jitted two-turn rollout per batch (Sampler.rollout: y1, then the
  correction instruction and y2 in the same KV cache). batch_size defaults to a
  training rollout's rows (data.batch_size x train.samples_per_prompt), so the
  sampler compiled for training is reused.
  """
  examples = tasks.reindex(exp.task.load_examples(split) if examples is None else examples)
  sample_params = exp.for_sampling(params)
  key, out = jax.random.key(seed), []
  rows = batch_size or exp.cfg.data.batch_size * exp.cfg.train.samples_per_prompt
  batches = exp.pipeline(examples, rows, seed=seed, train=False)
  attempts = exp.two_attempts(temperature)
  text = lambda ids: tokenizer_lib.strip_turn_end(attempts.decode(ids))
  for i, prompts in enumerate(batches):
    at = attempts(sample_params, prompts, examples, jax.random.fold_in(key, i))
    for row in np.flatnonzero(at.real_B):
      out.append(TwoTurns(examples[int(prompts.index_B[row])], text(at.y1_ids[row]),
                          text(at.y2_ids[row]), float(at.r1_B[row]), float(at.r2_B[row])))
  return out


def train(exp: Experiment, params: nnx.State, *, reference: nnx.State | None = None,
          schedule: Sequence[tuple[str, int]] | None = None,
          workdir: str | pathlib.Path | None = None, seed: int | None = None,
          on_log: Callable[[int, dict], None] | None = None) -> trainer.ScoreResult:
  """Runs Stage I / Stage II (config.train.schedule, or `schedule`) from `params`.

  reference: the frozen model of the KL terms; None: `params` itself (the
  paper's setup: policy and reference both start from the base model).
  Checkpoints go to <workdir>/checkpoints (default <config.workdir>/score) and
  a rerun resumes from them; see training.trainer.train_score.
  """
  return trainer.train_score(exp, params, params if reference is None else reference,
                             schedule=schedule, workdir=workdir, seed=seed, on_log=on_log)


def evaluate(exp: Experiment, params: nnx.State, *, split: str | None = None,
             num_problems: int | None = None, temperature: float = 0.0,
             seed: int = 0) -> dict:
  """The paper's metrics (acc_t1, acc_t2, delta, ...) of params on held-out problems."""
  return exp.evaluate(params, split=split, num_problems=num_problems,
                      temperature=temperature, seed=seed)


def load_trained(exp: Experiment, base: nnx.State | None = None, *,
                 workdir: str | pathlib.Path | None = None, best: bool = False,
                 step: int | None = None) -> nnx.State:
  """The policy params of a train() checkpoint, restored without any optimizer.

  workdir: what train() wrote to (default <config.workdir>/score); best: the
  step of highest training reward instead of the latest. With config.lora the
  checkpoint holds adapters, merged onto `base` (required then).
  """
  root = pathlib.Path(workdir or exp.workdir / 'score') / 'checkpoints'
  if not root.is_dir():
    raise FileNotFoundError(f'{root}: no checkpoints; train first or pass workdir=')
  if config_lib.lora_config(exp.cfg).enabled:
    if base is None:
      raise ValueError("load_trained: config.lora is on; pass base= (the adapters' base)")
    base = jax.device_put(base, exp.param_shardings(base))
    shapes, policy, _ = build.trainable(exp.cfg, base, base)   # adapters, merge
  else:
    shapes, policy = nnx.eval_shape(lambda: exp.init_params(0)), lambda p: p
  # The restored arrays take the run's layout (the trainer's, for the adapters too).
  template = jax.tree.map(
      lambda v, s: v.replace(jax.ShapeDtypeStruct(v.value.shape, v.value.dtype, sharding=s)),
      shapes, exp.param_shardings(shapes), is_leaf=lambda x: isinstance(x, nnx.Variable))
  ckpt = Checkpointer(CheckpointConfig(str(root), async_save=False))
  try:
    trained, _ = ckpt.restore_params(template, step=step, best=best)
  finally:
    ckpt.close()
  return policy(trained)
