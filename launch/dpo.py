"""Preference tuning on the embedded task: DPO with each scorer, RLAIF, SCoRe, one base.

  python launch/dpo.py --config=configs/tiny_dpo.py --seeds=0,1,2 --out=runs/dpo_study.md

Per seed, every method starts from the same base (= reference) model, trained by base_sft, and
is evaluated on the same held-out problems (config.eval): the base; online DPO
(config.train.schedule's `dpo` stage) with pairs scored by the oracle reward,
FactTune model confidence, the AI judge (P(yes)) and the swapped pairwise judge;
SCoRe (configs/tiny.py's Stage I / II schedule) with the true reward, and with
the judge's P(yes) as its reward (RLAIF). Before training, the base's samples on
--pair_problems training problems measure how often each label-free score orders
two samples of a prompt as the true reward does (pair accuracy).
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import flags

import common
from score_jax import evaluation
from score_jax.preference import data as data_lib
from score_jax.preference import judge as judge_lib
from score_jax.preference import offline
from score_jax.preference import online as online_lib
from score_jax.preference import scorers as scorers_lib
from score_jax.training import study
from score_jax.training.base_model import load_or_train_base
from score_jax.training.trainer import train_score

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
SCORE_SCHEDULE = (('stage1', 400), ('stage2', 300))   # configs/tiny.py's

LABELS = {'base': 'base', 'score': 'SCoRe (true reward)',
          'score_judge': 'SCoRe, judge P(yes) as reward (RLAIF)'}
LABELS |= {f'dpo_{s}': f'DPO, {s} pairs' for s in scorers_lib.SCORERS}
LABELS['dpo_pairs'] = 'DPO, pairs from --pairs (offline)'


def pair_accuracies(exp, base, seed: int) -> dict:
  """Each label-free scorer's pair accuracy vs the oracle on the base's samples."""
  k = exp.cfg.train.samples_per_prompt
  examples = exp.task.load_examples('train')[:PAIR_PROBLEMS.value]
  judge = online_lib.make_judge(exp, base)
  names = [s for s in scorers_lib.SCORERS if s != 'oracle']
  fns = {s: scorers_lib.make_scorer(s, exp, judge) for s in names}
  scores, oracle = {s: [] for s in names}, []
  params = exp.for_sampling(base)
  key = jax.random.key(seed + 17)
  pipe = exp.pipeline(examples, exp.cfg.data.batch_size, seed=seed, train=False)
  for i, batch in enumerate(pipe):
    ro = exp.rollout(params, batch, examples, jax.random.fold_in(key, i),
                     temperature=float(exp.cfg.sampling.temperature), repeat=k)
    if not ro.rows.all():   # a padded last batch: groups would mix real and pad rows
      continue
    exs = [examples[j] for j in np.repeat(np.asarray(batch['index']), k)]
    oracle.append(ro.r1 + ro.r2)
    for s in names:
      scores[s].append(fns[s](ro, exs, k))
  oracle = np.concatenate(oracle)
  return {s: scorers_lib.pair_accuracy(np.concatenate(v), oracle, k) for s, v in scores.items()}


def train_method(cfg, seed: int, m: str, base):
  """Params of method `m` trained from `base` (the reference too)."""
  if m == 'dpo_pairs':
    exp = common.build_experiment(study.seed_config(cfg, seed))
    batch = data_lib.pack_pairs(exp, data_lib.load_pairs(common.resolve(PAIRS.value)))
    return offline.train_pairs(exp, base, base, batch, steps=PAIRS_STEPS.value,
                               pairs_per_step=cfg.data.batch_size, seed=seed)
  if m.startswith('dpo_'):
    exp = common.build_experiment(study.seed_config(cfg, seed, **{'dpo.scorer': m[4:]}))
    return train_score(exp, base, base, phase=m).params
  exp = common.build_experiment(study.seed_config(cfg, seed, **{'train.schedule': SCORE_SCHEDULE}))
  if m == 'score_judge':
    exp.task = judge_lib.JudgeRewardTask(exp.task, online_lib.make_judge(exp, base))
  return train_score(exp, base, base, phase=m).params


def run_seed(cfg, seed: int, methods) -> dict:
  exp = common.build_experiment(study.seed_config(cfg, seed))
  base = load_or_train_base(exp)
  out = {'pair_accuracy': pair_accuracies(exp, base, seed)}
  print(f'seed {seed} pair accuracy vs oracle: ' + ', '.join(
      f'{s}={v["pair_accuracy"]:.3f}' for s, v in out['pair_accuracy'].items()), flush=True)
  for m in methods:
    t0 = time.time()
    params = base if m == 'base' else train_method(cfg, seed, m, base)
    r = exp.evaluate(params, temperature=0.0, seed=seed)
    out[m] = {k: v for k, v in r.items() if k not in ('r1', 'r2')}
    out[m]['wall_s'] = time.time() - t0
    print(f'seed {seed} {LABELS[m]}: t1={r["acc_t1"]:.3f} t2={r["acc_t2"]:.3f} '
          f'({out[m]["wall_s"]:.0f} s)', flush=True)
  return out


def _table(cfg, per_seed: dict, methods, wall: str) -> str:
  seeds = list(per_seed)
  n = per_seed[seeds[0]][methods[0]]['n']
  rows = {}
  for m in methods:
    for s in seeds:
      rows[f'{LABELS[m]}, seed {s}'] = per_seed[s][m]
    rows[f'**{LABELS[m]}, mean**'] = study.mean_row([per_seed[s][m] for s in seeds])
  lines = ['# Preference tuning vs SCoRe on the embedded task', '',
           f'config: {cfg.workdir} ({len(seeds)} seeds: {seeds}), {n} held-out problems, '
           'greedy. Delta with its paired-bootstrap 95% interval (mean row: 95% '
           't-interval over the seeds\' Deltas).', '', evaluation.format_table(rows), '',
           '## Pair accuracy vs the oracle reward', '',
           f'Base-model samples ({cfg.train.samples_per_prompt} per prompt, '
           f'{PAIR_PROBLEMS.value} training problems): within-prompt pairs whose true '
           'reward r1 + r2 differs; a tie in the score counts one half.', '',
           '| scorer | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean | ties |',
           '|---' * (len(seeds) + 3) + '|']
  for name in per_seed[seeds[0]]['pair_accuracy']:
    accs = [per_seed[s]['pair_accuracy'][name] for s in seeds]
    lines.append(f'| {name} | ' + ' | '.join(f'{a["pair_accuracy"]:.3f}' for a in accs)
                 + f' | {np.mean([a["pair_accuracy"] for a in accs]):.3f}'
                 + f' | {np.mean([a["ties"] for a in accs]):.2f} |')
  lines += ['', f'Wall time: {wall} on this machine (shared with other jobs).']
  return '\n'.join(lines)


def merged(paths) -> dict:
  """Per-seed results of several runs' .json files, methods joined per seed."""
  per_seed: dict = {}
  for path in paths:
    for seed, res in json.loads(common.resolve(path).read_text()).items():
      per_seed.setdefault(int(seed), {}).update(res)
  return dict(sorted(per_seed.items()))


def main(argv):
  del argv
  cfg = common.CONFIG.value
  unknown = set(METHODS.value) - set(LABELS)
  if unknown:
    common.fail(f'--methods: unknown {sorted(unknown)}; expected some of {list(LABELS)}')
  if ('dpo_pairs' in METHODS.value) != bool(PAIRS.value):
    common.fail('--methods=dpo_pairs and --pairs=FILE go together')
  if PAIRS.value:
    try:   # a bad pairs file stops here, with its file:line, before any training
      data_lib.load_pairs(common.resolve(PAIRS.value))
    except (ValueError, FileNotFoundError) as e:
      common.fail(str(e))
  out = common.resolve(OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  if MERGE.value:
    per_seed = merged(MERGE.value)
    wall = sum(r.get('wall_s', 0.0) for res in per_seed.values() for r in res.values()
               if isinstance(r, dict))
    text = _table(cfg, per_seed, METHODS.value,
                  f'{wall:.0f} s summed over the methods (without the base_sft phases)')
    out.write_text(text + '\n')
    print(text)
    return
  _, text = study.run_seeds(
      [int(x) for x in SEEDS.value], lambda s: run_seed(cfg, s, METHODS.value),
      lambda per_seed, wall_s: _table(cfg, per_seed, METHODS.value, f'{wall_s:.0f} s'), out)
  print(text)
  print(f'\nwritten: {out}')


if __name__ == '__main__':
  common.run(main)
