"""The paper's comparison on the embedded task, over several seeds, as one markdown table.

  python launch/compare.py --config=configs/tiny.py --seeds=0,1,2 --out=runs/compare.md

Seeds can run as separate processes (--seeds=1 --out=runs/s1.md, ...) and be
joined afterwards: --merge=runs/s0.json,runs/s1.json,... --out=runs/compare.md.

Rows: base = Self-Refine (the untrained two-turn protocol), STaR (D+), Pair-SFT,
SCoRe, and the ablations "without Stage I" (Stage II only, same Stage II steps)
and "without reward shaping" (alpha = 0). Every method starts from the same
base model of its seed (base_sft) and is evaluated on the same held-out problems,
greedy and at temperature 1. The table shows each seed (Delta with its paired
bootstrap interval over problems) and the mean over seeds with a t-interval over
the seeds' values; a second table gives SCoRe minus each other method, paired by
seed. A baseline whose sampled data is too small to train on is not run; its
row says so instead of standing in for the method. The study itself is
score_jax.training.study (run_seeds, run_ablations, ablation_table).
"""
from __future__ import annotations

from absl import flags

import common
from score_jax.training import study

SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (each: its own base model).')
OUT = flags.DEFINE_string('out', 'runs/compare.md', 'Markdown table goes here (+ .json).')
METHODS = flags.DEFINE_list(
    'methods', ['base', 'star', 'pair_sft', 'score', 'no_stage1', 'no_shaping'],
    'Which rows to run.')
SFT_STEPS = flags.DEFINE_integer('sft_steps', 300, 'SFT steps of STaR / Pair-SFT.')
SFT_LR = flags.DEFINE_float('sft_learning_rate', 3e-4, 'SFT learning rate of baselines.')
BASELINE_PROBLEMS = flags.DEFINE_integer('baseline_problems', 2000,
                                         'Training problems the baselines sample on.')
MERGE = flags.DEFINE_list('merge', [], 'Only write --out from these .json results of '
                          'earlier runs (e.g. seeds run in parallel processes).')


def main(argv):
  del argv
  cfg = common.CONFIG.value
  methods = METHODS.value
  unknown = set(methods) - set(study.ABLATION_LABELS)
  if unknown:
    common.fail(f'--methods: unknown {sorted(unknown)}; '
                f'expected some of {list(study.ABLATION_LABELS)}')
  settings = study.BaselineSettings(steps=SFT_STEPS.value, learning_rate=SFT_LR.value,
                                    num_problems=BASELINE_PROBLEMS.value)
  out = common.resolve(OUT.value)
  if MERGE.value:
    paths = [common.resolve(p) for p in MERGE.value]
    try:
      per_seed, text = study.merged_ablation_table(cfg, paths, methods)
    except ValueError as e:
      common.fail(f'--merge: {e}')
    out.parent.mkdir(parents=True, exist_ok=True)
    study.write_results(out, per_seed, text)
    print(text)
    return
  _, text = study.run_seeds(
      [int(s) for s in SEEDS.value],
      lambda s: study.run_ablations(cfg, s, methods, settings=settings,
                                    build=common.build_experiment),
      lambda per_seed, wall_s: study.ablation_table(cfg, per_seed, methods, wall_s), out)
  print(text)
  print(f'\nwritten: {out}')


if __name__ == '__main__':
  common.run(main)
