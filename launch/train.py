"""SCoRe training: base model -> Stage I / Stage II schedule -> final evaluation.

  python launch/train.py --config=configs/tiny.py --config.train.schedule="(('stage1',400),('stage2',300))"

The base (reference) model is config.model.checkpoint, or for the synthetic task
the cached supervised warm-up. Progress bars show step rate and ETA; metrics go to
<workdir>/score/metrics.jsonl and TensorBoard; Orbax checkpoints to
<workdir>/score/checkpoints (the run resumes from the latest one by default).
"""
from __future__ import annotations

from absl import flags
from absl import logging

import common
from score_jax import evaluation
from score_jax.training.base_model import load_or_train_base
from score_jax.training.trainer import train_score

EVALUATE = flags.DEFINE_bool('evaluate', True, 'Evaluate base and trained policy at the end.')


def main(argv):
  cfg = common.CONFIG.value
  common.maybe_initialize_distributed(cfg)
  exp = common.build_experiment(cfg)
  base = load_or_train_base(exp)
  result = train_score(exp, base, base, phase='score')
  logging.info('trained %d steps', result.steps)
  if EVALUATE.value:
    for temp in cfg.eval.temperatures:
      rows = {'base': exp.evaluate(base, temperature=float(temp), seed=cfg.seed),
              'SCoRe': exp.evaluate(result.params, temperature=float(temp), seed=cfg.seed)}
      print(f'\ndecoding temperature {temp:g}, {rows["base"]["n"]} held-out problems')
      print(evaluation.format_table(rows))
  print(f'metrics and checkpoints: {exp.workdir / "score"}')


if __name__ == '__main__':
  common.run(main)
