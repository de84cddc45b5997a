"""Preference tuning on the embedded task: DPO with each scorer, RLAIF, SCoRe, one base.

  python launch/dpo.py --config=configs/tiny_dpo.py --seeds=0,1,2 --out=runs/dpo_study.md

Per seed, every method starts from the same base (= reference) model, trained by base_sft,
and is evaluated on the same held-out problems (config.eval): the base; online DPO
(config.train.schedule's `dpo` stage) with pairs scored by the oracle reward,
FactTune model confidence, the AI judge (P(yes)) and the swapped pairwise judge;
SCoRe (configs/tiny.py's Stage I / II schedule) with the true reward, and with
the judge's P(yes) as its reward (RLAIF). Before training, the base's samples on
--pair_problems training problems measure how often each label-free score orders
two samples of a prompt as the true reward does (pair accuracy). The study itself
is score_jax.preference.study (run_seed, table, merged_table).
"""
from __future__ import annotations

from absl import flags

import common
from score_jax.preference import data as data_lib
from score_jax.preference import study
from score_jax.training import study as training_study

SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (each: its own base model).')
OUT = flags.DEFINE_string('out', 'runs/dpo_study.md', 'Markdown table goes here (+ .json).')
METHODS = flags.DEFINE_list(
    'methods', ['base', 'dpo_oracle', 'dpo_confidence', 'dpo_judge', 'score'],
    'Rows to run: base, dpo_<scorer> for each scorer, score, score_judge.')
PAIR_PROBLEMS = flags.DEFINE_integer('pair_problems', 256,
                                     'Training problems for the pair-accuracy check.')
PAIRS = flags.DEFINE_string('pairs', '', 'A JSONL file of {prompt, chosen, rejected}: '
                            'adds the row dpo_pairs, offline DPO on those pairs.')
PAIRS_STEPS = flags.DEFINE_integer('pairs_steps', 100, 'Steps of offline DPO (--pairs).')
MERGE = flags.DEFINE_list('merge', [], 'Only write --out from these .json results of '
                          'earlier runs (e.g. seeds or methods run in parallel).')


def _settings() -> study.PreferenceSettings:
  """The flags' settings; a bad --methods or pairs file stops here, before any training."""
  unknown = set(METHODS.value) - set(study.LABELS)
  if unknown:
    common.fail(f'--methods: unknown {sorted(unknown)}; expected some of {list(study.LABELS)}')
  if ('dpo_pairs' in METHODS.value) != bool(PAIRS.value):
    common.fail('--methods=dpo_pairs and --pairs=FILE go together')
  pairs = ()
  if PAIRS.value:
    try:   # with its file:line
      pairs = tuple(data_lib.load_pairs(common.resolve(PAIRS.value)))
    except (ValueError, FileNotFoundError) as e:
      common.fail(str(e))
  return study.PreferenceSettings(pair_problems=PAIR_PROBLEMS.value, pairs=pairs,
                                  pairs_steps=PAIRS_STEPS.value)


def main(argv):
  del argv
  cfg, methods, settings = common.CONFIG.value, METHODS.value, _settings()
  out = common.resolve(OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  if MERGE.value:
    try:
      text = study.merged_table(cfg, [common.resolve(p) for p in MERGE.value], methods,
                                settings.pair_problems)
    except ValueError as e:
      common.fail(f'--merge: {e}')
    out.write_text(text + '\n')
    print(text)
    return
  _, text = training_study.run_seeds(
      [int(x) for x in SEEDS.value],
      lambda s: study.run_seed(cfg, s, methods, settings, build=common.build_experiment),
      lambda per_seed, wall_s: study.table(cfg, per_seed, methods, f'{wall_s:.0f} s',
                                           settings.pair_problems), out)
  print(text)
  print(f'\nwritten: {out}')


if __name__ == '__main__':
  common.run(main)
