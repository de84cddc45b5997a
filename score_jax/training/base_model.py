"""The base model of a run: loaded from config.model.checkpoint, or (for the
synthetic demo) trained by the supervised base_sft phase and cached under the workdir.

The cache key is a hash of everything that shapes the base model (model config,
tokenizer, task, base_sft settings, seed), so a changed config trains a new one
and a rerun with the same config reuses it.
"""
from __future__ import annotations

import hashlib
import json

import jax
import tqdm
from absl import logging
from flax import nnx

from score_jax.training import base_sft as base_sft_lib
from score_jax.models.checkpoints import load_orbax, save_orbax
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_sft


def _fingerprint(exp: Experiment) -> str:
  c = exp.cfg
  key = {'model': str(exp.model_cfg), 'tokenizer': exp.tokenizer.serialized_proto.hex(),
         'task': c.task.to_dict(), 'base_sft': c.base_sft.to_dict() if 'base_sft' in c else None,
         'seed': c.seed, 'buckets': list(c.data.buckets),
         'max_tokens': [c.sampling.max_y1_tokens, c.sampling.max_y2_tokens]}
  return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_or_train_base(exp: Experiment) -> nnx.State:
  """Params of the base (= reference) model, laid out for training."""
  params = exp.init_params(exp.cfg.seed)
  if exp.cfg.model.checkpoint or 'base_sft' not in exp.cfg or exp.cfg.base_sft.steps <= 0:
    return params
  path = exp.workdir / f'base-{_fingerprint(exp)}'
  if (path / 'params').exists():
    logging.info('reusing the cached base model at %s', path)
    print(f'Reusing the cached base model at {path}')
    return load_orbax(path / 'params', exp.model_cfg,
                      shardings=exp.param_shardings(params))
  w = exp.cfg.base_sft
  train = exp.task.load_examples('train')
  holdout = train[:w.holdout]    # never trained on; decides when base_sft stops
  traces, target = base_sft_lib.base_sft_data(
      exp, examples=train[w.holdout:], seed=exp.cfg.seed,
      corrupt_fraction=w.corrupt_fraction)

  def reached_target(step, params):
    acc = exp.evaluate_examples(params, holdout, temperature=0.0, seed=step)['acc_t1']
    tqdm.tqdm.write(f'  base_sft step {step}: greedy Acc@t1 on {len(holdout)} held-out training '
          f'problems = {acc:.3f} (target {w.target_acc_t1})')
    return {'holdout_acc_t1': acc} if acc >= w.target_acc_t1 else None

  params = train_sft(exp, params, traces, target, steps=w.steps, batch_size=w.batch_size,
                     learning_rate=w.learning_rate, seed=exp.cfg.seed, phase='base_sft',
                     warmup_steps=w.warmup_steps,
                     stop_when=reached_target if w.target_acc_t1 > 0 else None,
                     check_every=w.check_every)
  if jax.process_index() == 0:
    path.mkdir(parents=True, exist_ok=True)
  save_orbax(path / 'params', params)
  return params
