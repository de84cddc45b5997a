"""The paper's comparison on the embedded task, over several seeds, as one markdown table.

  python launch/compare.py --config=configs/tiny.py --seeds=0,1,2 --out=runs/compare.md

Rows: base = Self-Refine (the untrained two-turn protocol), STaR (D+), Pair-SFT,
SCoRe, and the ablations "without Stage I" (Stage II only, same Stage II steps)
and "without reward shaping" (alpha = 0). Every method starts from the same
warmed-up base model of its seed and is evaluated on the same held-out problems,
greedy and at temperature 1. The table shows each seed (Delta with its paired
bootstrap interval over problems) and the mean over seeds with a t-interval over
the seeds' values; a second table gives SCoRe minus each other method, paired by
seed. A baseline whose sampled data is too small to train on is not run; its
row says so instead of standing in for the method.
"""
from __future__ import annotations

import copy
import json
import time

import numpy as np
from absl import flags

import common
from score_jax import evaluation
from score_jax.training import baselines
from score_jax.training import report
from score_jax.training.base_model import load_or_train_base
from score_jax.training.trainer import train_score

SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (each: its own base model).')
OUT = flags.DEFINE_string('out', 'runs/compare.md', 'Markdown table goes here (+ .json).')
METHODS = flags.DEFINE_list(
    'methods', ['base', 'star', 'pair_sft', 'score', 'no_stage1', 'no_shaping'],
    'Which rows to run.')
SFT_STEPS = flags.DEFINE_integer('sft_steps', 300, 'SFT steps of STaR / Pair-SFT.')
SFT_LR = flags.DEFINE_float('sft_learning_rate', 3e-4, 'SFT learning rate of baselines.')
BASELINE_PROBLEMS = flags.DEFINE_integer('baseline_problems', 2000,
                                         'Training problems the baselines sample on.')

LABELS = {'base': 'base (= Self-Refine)', 'star': 'STaR (D+)', 'pair_sft': 'Pair-SFT',
          'score': 'SCoRe', 'no_stage1': 'SCoRe w/o Stage I',
          'no_shaping': 'SCoRe w/o reward shaping'}


def _variant(cfg, seed: int, *, stage: str | None = None, alpha: float | None = None):
  """The config of one seed, optionally restricted to one stage's steps / another alpha."""
  c = copy.deepcopy(cfg)
  c.unlock()
  c.seed = seed
  c.workdir = f'{cfg.workdir}/seed{seed}'
  if stage is not None:
    c.train.schedule = tuple((s, int(n)) for s, n in cfg.train.schedule if s == stage)
  if alpha is not None:
    c.loss.alpha = alpha
  c.lock()
  return c


def run_seed(cfg, seed: int, methods) -> dict[str, dict]:
  """Every method from the same base model of this seed.

  The SCoRe variants share work: Stage I runs once; SCoRe and "without reward
  shaping" continue from it with their own Stage II (a fresh optimizer), and
  "without Stage I" runs the same Stage II from the base model.
  """
  exp = common.build_experiment(_variant(cfg, seed))
  base = load_or_train_base(exp)
  stage2 = common.build_experiment(_variant(cfg, seed, stage='stage2'))
  stage1 = None
  results, data_stats = {}, {}
  sft = dict(steps=SFT_STEPS.value, batch_size=cfg.warmup.batch_size,
             learning_rate=SFT_LR.value, seed=seed)
  for m in methods:
    t0 = time.time()
    if m == 'base':
      params = base
    elif m in ('star', 'pair_sft'):
      try:
        params, data_stats[m] = _baseline(exp, base, m, sft)
      except baselines.TooLittleData as e:
        print(f'seed {seed} {LABELS[m]}: not run: {e}', flush=True)
        for temp in cfg.eval.temperatures:
          results[f'{m}@{temp:g}'] = {'not_run': str(e)}
        continue
    elif m == 'no_stage1':
      params = train_score(stage2, base, base, phase='no_stage1').params
    else:
      if stage1 is None:
        s1 = common.build_experiment(_variant(cfg, seed, stage='stage1'))
        stage1 = train_score(s1, base, base, phase='stage1')
      variant = stage2 if m == 'score' else common.build_experiment(
          _variant(cfg, seed, stage='stage2', alpha=0.0))
      # With LoRA, Stage II continues Stage I's adapters on the same base.
      start = base if stage1.adapters is not None else stage1.params
      params = train_score(variant, start, base, phase=f'{m}_stage2',
                           adapters=stage1.adapters).params
    for temp in cfg.eval.temperatures:
      r = exp.evaluate(params, temperature=float(temp), seed=seed)
      results[f'{m}@{temp:g}'] = {k: v for k, v in r.items() if k not in ('r1', 'r2')}
    results[f'{m}@{cfg.eval.temperatures[0]:g}']['wall_s'] = time.time() - t0
    results[f'{m}@{cfg.eval.temperatures[0]:g}']['data'] = data_stats.get(m, {})
    print(f'seed {seed} {LABELS[m]} {data_stats.get(m, "")}: ' + ', '.join(
        f'T={t:g} delta={results[f"{m}@{t:g}"]["delta"]:+.3f}' for t in cfg.eval.temperatures),
          flush=True)
  return results


def _baseline(exp, base, m: str, sft: dict):
  if m == 'star':
    params, stats = baselines.star(exp, base, iterations=2, samples=2,
                                   num_problems=BASELINE_PROBLEMS.value, **sft)
  else:
    params, stats = baselines.pair_sft(exp, base, samples=4,
                                       num_problems=BASELINE_PROBLEMS.value, **sft)
  return params, stats


def _mean_row(rows):
  """Mean over seeds; Delta's interval is a t-interval over the seeds' Deltas."""
  keys = ('acc_t1', 'acc_t2', 'delta', 'delta_i_to_c', 'delta_c_to_i', 'edit_ratio')
  out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
  out['delta'], out['ci'] = report.seed_mean_interval([r['delta'] for r in rows])
  out['n'] = rows[0]['n']
  return out


def _ran(per_seed, seeds, key):
  return [per_seed[s][key] for s in seeds if 'not_run' not in per_seed[s][key]]


def _fmt(mean, ci):
  text = f'{100 * mean:+.1f}'
  return text + (f' [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]' if ci else ' (1 seed)')


def _differences(per_seed, seeds, temp) -> list[str]:
  """SCoRe minus each other method, paired by seed (same base model and problems)."""
  if 'score' not in METHODS.value:
    return []
  lines = ['| SCoRe minus | seeds | Delta difference | Acc@t2 difference |', '|---|---|---|---|']
  for m in METHODS.value:
    key = f'{m}@{temp:g}'
    both = [s for s in seeds if 'not_run' not in per_seed[s][key]]
    if m == 'score' or not both:
      continue
    diff = lambda f: [per_seed[s][f'score@{temp:g}'][f] - per_seed[s][key][f] for s in both]
    lines.append(f'| {LABELS[m]} | {len(both)} | '
                 f'{_fmt(*report.seed_mean_interval(diff("delta")))} | '
                 f'{_fmt(*report.seed_mean_interval(diff("acc_t2")))} |')
  return ['', 'SCoRe minus each method, in points: mean over seeds of the per-seed '
          f'difference, 95% {report.SEED_INTERVAL}.', ''] + lines


def _table(cfg, per_seed: dict, wall_s: float) -> str:
  seeds = list(per_seed)
  first = cfg.eval.temperatures[0]
  lines = ['# SCoRe vs baselines on the embedded task', '',
           f'config: {cfg.workdir} ({len(seeds)} seeds: {seeds}), '
           f'{per_seed[seeds[0]][f"base@{first:g}"]["n"]} held-out problems. Per-seed '
           'rows: Delta with its 95% paired-bootstrap interval over problems. Mean rows: '
           f'mean over seeds, Delta with a 95% {report.SEED_INTERVAL}. The base model is '
           'warmed up with supervised synthetic corrections (configs/tiny.py).', '']
  for temp in cfg.eval.temperatures:
    kind = 'greedy' if float(temp) == 0 else f'temperature {temp:g}'
    rows, notes = {}, []
    for m in METHODS.value:
      key = f'{m}@{temp:g}'
      for s in seeds:
        if 'not_run' in per_seed[s][key]:
          notes.append(f'- {LABELS[m]}, seed {s}: not run: {per_seed[s][key]["not_run"]}')
        else:
          rows[f'{LABELS[m]}, seed {s}'] = per_seed[s][key]
        ran_iters = per_seed[s][f'{m}@{first:g}'].get('data', {}).get('iterations', 2)
        if m == 'star' and ran_iters < 2 and temp == first:
          notes.append(f'- {LABELS[m]}, seed {s}: only {ran_iters} of 2 iterations (the '
                       'second kept fewer traces than one SFT batch)')
      ran = _ran(per_seed, seeds, key)
      if ran:
        label = 'mean' if len(ran) == len(seeds) else f'mean of {len(ran)} seeds'
        rows[f'**{LABELS[m]}, {label}**'] = _mean_row(ran)
    lines += [f'## Decoding: {kind}', '', evaluation.format_table(rows), *notes,
              *_differences(per_seed, seeds, temp), '']
  lines.append(f'Wall time: {wall_s:.0f} s on this machine.')
  return '\n'.join(lines)


def main(argv):
  del argv
  cfg = common.CONFIG.value
  seeds = [int(s) for s in SEEDS.value]
  unknown = set(METHODS.value) - set(LABELS)
  if unknown:
    common.fail(f'--methods: unknown {sorted(unknown)}; expected some of {list(LABELS)}')
  out = common.resolve(OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  per_seed = {}
  for s in seeds:   # rewritten after every seed, so a partial run still reports
    per_seed[s] = run_seed(cfg, s, METHODS.value)
    text = _table(cfg, per_seed, time.time() - t0)
    out.write_text(text + '\n')
    out.with_suffix('.json').write_text(json.dumps(per_seed, indent=1, default=str))
  print(text)
  print(f'\nwritten: {out}')


if __name__ == '__main__':
  common.run(main)
