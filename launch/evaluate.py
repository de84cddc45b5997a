"""Evaluates the two-turn self-correction protocol and prints the paper's metric table.

  python launch/evaluate.py --config=configs/tiny.py --params=best
  python launch/evaluate.py --config=configs/gemma3_270m_math.py --params=base

--params: 'base' (config.model.checkpoint, or the cached base_sft model), 'latest' or
'best' (the SCoRe run's checkpoints under <workdir>/score/checkpoints).
"""
from __future__ import annotations

import json

import jax
from absl import flags

import common
from score_jax import config as config_lib
from score_jax import evaluation
from score_jax.training import state as state_lib
from score_jax.training.base_model import load_or_train_base
from score_jax.training.checkpoint import Checkpointer, CheckpointConfig
from score_jax.training.experiment import Experiment
from score_jax.training.build import trainable

PARAMS = flags.DEFINE_enum('params', 'base', ['base', 'latest', 'best'], 'Which weights.')
OUT = flags.DEFINE_string('out', '', 'Write the metrics as JSON here.')


def _trained(exp: Experiment, base, which: str):
  tx = state_lib.make_optimizer(config_lib.optim_config(exp.cfg))
  train_init, policy, _ = trainable(exp.cfg, base, base)   # LoRA: adapters on the base
  shardings = state_lib.state_shardings(train_init, tx, exp.mesh, exp.strategy.rules)
  template = state_lib.init_train_state(train_init, tx, jax.random.key(0), shardings)
  ckpt = Checkpointer(CheckpointConfig(str(exp.workdir / 'score' / 'checkpoints'),
                                       async_save=False))
  try:
    state, _, meta = ckpt.restore(template, best=(which == 'best'))
  except FileNotFoundError as e:
    common.fail(f'{e}; train first (launch/train.py) or use --params=base')
  print(f'evaluating the {which} checkpoint (step {meta["step"]})')
  return policy(state.params)


def main(argv):
  cfg = common.CONFIG.value
  common.maybe_initialize_distributed(cfg)
  exp = common.build_experiment(cfg)
  params = load_or_train_base(exp)
  if PARAMS.value != 'base':
    params = _trained(exp, params, PARAMS.value)
  out = {}
  for temp in cfg.eval.temperatures:
    r = exp.evaluate(params, temperature=float(temp), seed=cfg.seed)
    out[f'T={temp:g}'] = {k: v for k, v in r.items() if k not in ('r1', 'r2')}
    print(f'\n{PARAMS.value} weights, decoding temperature {temp:g}, {r["n"]} problems')
    print(evaluation.format_table({PARAMS.value: r}))
  if OUT.value:
    path = common.resolve(OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f'written: {path}')


if __name__ == '__main__':
  common.run(main)
