"""SCoRe training: base model -> Stage I / Stage II schedule -> final evaluation.

  python launch/train.py --config=configs/tiny.py --config.train.schedule="(('stage1',400),('stage2',300))"

The base (reference) model is config.model.checkpoint, or for the synthetic task
the cached base_sft model (supervised). Progress bars show step rate and ETA; metrics go to
<workdir>/score/metrics.jsonl and TensorBoard; Orbax checkpoints to
<workdir>/score/checkpoints.

Resuming. A rerun with the same workdir continues from the newest intact
checkpoint (config.checkpoint.resume=False starts over). It refuses, in one
line and before any work, a checkpoint of another model (naming the parameter,
both shapes and the config field) or one trained under another config (naming
the changed fields: any that change what is trained; not workdir, mesh, eval,
logging or checkpoint settings). To start fresh, pass a new --config.workdir; to
continue deliberately under the new config, pass
--config.checkpoint.force_resume=True (the checkpoint then records the change).
A rerun of a finished run trains nothing and says so. A damaged newest step is
moved to <workdir>/score/checkpoints/damaged and the run resumes from the step
before it. SIGTERM (preemption) or Ctrl-C saves the current step and exits 0;
rerun the same command to resume.
"""
from __future__ import annotations

from absl import flags
from absl import logging

import common
from score_jax import evaluation
from score_jax.training.base_model import load_or_train_base
from score_jax.training.trainer import check_resume, train_score

EVALUATE = flags.DEFINE_bool('evaluate', True, 'Evaluate base and trained policy at the end.')


def main(argv):
  cfg = common.CONFIG.value
  common.maybe_initialize_distributed(cfg)
  exp = common.build_experiment(cfg)
  check_resume(exp, phase='score')   # refuses (UserError: one line) before base_sft
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
