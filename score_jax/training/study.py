"""Studies over seeds: per-seed configs, the SCoRe ablations, seed means, the tables.

A study runs several methods on several seeds (each seed its own base model)
and reports a markdown table plus the per-seed results as JSON. launch/compare.py
(SCoRe vs baselines and ablations) parses flags and calls this module;
launch/dpo.py calls score_jax.preference.study, which builds on it:

  per_seed, text = study.run_seeds(seeds, run_one, table, out)

`run_seeds` rewrites the table and JSON after every seed, so a partial run
still reports. `run_ablations` is one seed of the comparison: Stage I runs once
and SCoRe and "without reward shaping" continue from it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from score_jax import evaluation
from score_jax.training import baselines
from score_jax.training import report
from score_jax.training.base_model import load_or_train_base
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_score

PerSeed = dict[int, dict[str, Any]]
# The summarize() fields a mean row averages over seeds.
MEAN_KEYS = ('acc_t1', 'acc_t2', 'delta', 'delta_i_to_c', 'delta_c_to_i', 'edit_ratio')
ABLATION_LABELS = {'base': 'base (= Self-Refine)', 'star': 'STaR (D+)',
                   'pair_sft': 'Pair-SFT', 'score': 'SCoRe', 'no_stage1': 'SCoRe w/o Stage I',
                   'no_shaping': 'SCoRe w/o reward shaping'}


@dataclasses.dataclass(frozen=True)
class BaselineSettings:
  """How STaR and Pair-SFT sample and fine-tune (their SFT is not config.base_sft's)."""
  steps: int = 300
  learning_rate: float = 3e-4
  num_problems: int = 2000


def seed_config(cfg, seed: int, *, stage: str | None = None, **fields):
  """The config of one seed, workdir <workdir>/seed<seed>.

  Args:
    cfg: the study's (locked) ConfigDict; not modified.
    seed: replaces cfg.seed.
    stage: keep only this stage of cfg.train.schedule (same step count).
    **fields: dotted names replaced, e.g. **{'loss.alpha': 0.0}.
  """
  c = copy.deepcopy(cfg)
  c.unlock()
  c.seed = seed
  c.workdir = f'{cfg.workdir}/seed{seed}'
  if stage is not None:
    c.train.schedule = tuple((s, int(n)) for s, n in cfg.train.schedule if s == stage)
  for name, value in fields.items():
    section, field = name.split('.')
    c[section][field] = value
  c.lock()
  return c


def write_results(out: pathlib.Path, per_seed: PerSeed, text: str) -> None:
  """The markdown table at `out`, the per-seed results at out.json."""
  out.write_text(text + '\n')
  out.with_suffix('.json').write_text(json.dumps(per_seed, indent=1, default=str))


def merged(paths: Iterable[pathlib.Path]) -> PerSeed:
  """Per-seed results of several runs' .json files (seeds or methods run apart), joined.

  Raises:
    ValueError: a file is missing, not JSON, or not {seed: {method: result}} (one
      line naming the file).
  """
  per_seed: dict = {}
  for path in paths:
    for seed, res in _read_results(pathlib.Path(path)).items():
      per_seed.setdefault(int(seed), {}).update(res)
  return dict(sorted(per_seed.items()))


def _read_results(path: pathlib.Path) -> dict:
  expect = 'expected the .json results file of an earlier run ({seed: {method: result}})'
  try:
    results = json.loads(path.read_text())
  except FileNotFoundError:
    raise ValueError(f'{path}: no such file; {expect}') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: not JSON ({e}); {expect}') from None
  if not (isinstance(results, dict) and all(
      str(k).lstrip('-').isdigit() and isinstance(v, dict) for k, v in results.items())):
    raise ValueError(f'{path}: not a results file; {expect}')
  return results


def missing_results(per_seed: PerSeed, keys: Sequence[str], paths: Sequence) -> None:
  """Raises ValueError (one line) if a seed lacks one of `keys`."""
  for s, res in per_seed.items():
    missing = [k for k in keys if k not in res]
    if missing:
      raise ValueError(f'{", ".join(map(str, paths))}: seed {s} has no results for '
                       f'{missing}; expected every one of {list(keys)}')


# What a merged table's wall time covers (seeds or methods run in separate processes).
SUMMED_WALL = 'summed over the methods (without the base_sft phases)'


def summed_wall_s(per_seed: PerSeed) -> float:
  """The methods' wall_s summed over seeds (their base_sft phases not included)."""
  return sum(r.get('wall_s', 0.0) for res in per_seed.values() for r in res.values()
             if isinstance(r, dict))


def run_seeds(seeds: Iterable[int], run_one: Callable[[int], dict],
              table: Callable[[PerSeed, float], str],
              out: pathlib.Path) -> tuple[PerSeed, str]:
  """Runs `run_one(seed)` per seed, rewriting `out` and out.json after each.

  Args:
    seeds: in order; each result is keyed by its seed.
    run_one: one seed's results (JSON-able, non-JSON values written as str).
    table: markdown of the seeds so far and the wall seconds since the start.
    out: the markdown path; its folder is created.

  Returns:
    The per-seed results and the last table written ('' without seeds).
  """
  out.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  per_seed, text = {}, ''
  for s in seeds:
    per_seed[s] = run_one(s)
    text = table(per_seed, time.time() - t0)
    write_results(out, per_seed, text)
  return per_seed, text


def mean_row(rows: Sequence[dict]) -> dict:
  """The mean over seeds of summarize() rows (each with MEAN_KEYS and 'n').

  Delta's interval is report.seed_mean_interval over the seeds' Deltas (None for
  one seed): the seeds are the replicates; averaging per-seed bounds would not be
  an interval for the mean.
  """
  out = {k: float(np.mean([r[k] for r in rows])) for k in MEAN_KEYS}
  out['delta'], out['ci'] = report.seed_mean_interval([r['delta'] for r in rows])
  out['n'] = rows[0]['n']
  return out


def _baseline(exp: Experiment, base, m: str, seed: int, settings: BaselineSettings):
  sft = dict(steps=settings.steps, batch_size=exp.cfg.base_sft.batch_size,
             learning_rate=settings.learning_rate, seed=seed,
             num_problems=settings.num_problems)
  if m == 'star':
    return baselines.star(exp, base, iterations=2, samples=2, **sft)
  return baselines.pair_sft(exp, base, samples=4, **sft)


def _ablation_params(cfg, m: str, base, seed: int, exps: dict, shared: dict,
                     settings: BaselineSettings, build: Callable) -> tuple[Any, dict]:
  """Params of method `m` (and its baseline data stats) from this seed's base."""
  if m == 'base':
    return base, {}
  if m in ('star', 'pair_sft'):
    return _baseline(exps['eval'], base, m, seed, settings)
  if m == 'no_stage1':
    return train_score(exps['stage2'], base, base, phase='no_stage1').params, {}
  if 'stage1' not in shared:   # trained once, shared by SCoRe and "w/o reward shaping"
    s1 = build(seed_config(cfg, seed, stage='stage1'))
    shared['stage1'] = train_score(s1, base, base, phase='stage1')
  stage1 = shared['stage1']
  variant = exps['stage2'] if m == 'score' else build(
      seed_config(cfg, seed, stage='stage2', **{'loss.alpha': 0.0}))
  # With LoRA, Stage II continues Stage I's adapters on the same base.
  start = base if stage1.adapters is not None else stage1.params
  return train_score(variant, start, base, phase=f'{m}_stage2',
                     adapters=stage1.adapters).params, {}


def run_ablations(cfg, seed: int, methods: Sequence[str], *,
                  settings: BaselineSettings = BaselineSettings(),
                  build: Callable = Experiment) -> dict[str, dict]:
  """Every method of ABLATION_LABELS in `methods` from the same base model of `seed`.

  Stage I runs once; SCoRe and "without reward shaping" (alpha = 0) continue
  from it with their own Stage II (a fresh optimizer); "without Stage I" runs
  the same Stage II from the base. A baseline with too little sampled data is
  not run: its results say why ('not_run'). `build` makes an Experiment of a
  config (launchers pass one that validates with one-line errors).

  Returns:
    '<method>@<temperature>' -> summarize() fields without r1/r2; the first
    temperature's entry also holds 'wall_s' and the baseline's 'data' stats.
  """
  temps = cfg.eval.temperatures
  exps = {'eval': build(seed_config(cfg, seed)),
          'stage2': build(seed_config(cfg, seed, stage='stage2'))}
  base = load_or_train_base(exps['eval'])
  results, shared = {}, {}
  for m in methods:
    t0 = time.time()
    try:
      params, data = _ablation_params(cfg, m, base, seed, exps, shared, settings, build)
    except baselines.TooLittleData as e:
      print(f'seed {seed} {ABLATION_LABELS[m]}: not run: {e}', flush=True)
      results.update({f'{m}@{t:g}': {'not_run': str(e)} for t in temps})
      continue
    for temp in temps:
      r = exps['eval'].evaluate(params, temperature=float(temp), seed=seed)
      results[f'{m}@{temp:g}'] = {k: v for k, v in r.items() if k not in ('r1', 'r2')}
    results[f'{m}@{temps[0]:g}'].update(wall_s=time.time() - t0, data=data)
    print(f'seed {seed} {ABLATION_LABELS[m]} {data or ""}: ' + ', '.join(
        f'T={t:g} delta={results[f"{m}@{t:g}"]["delta"]:+.3f}' for t in temps), flush=True)
  return results


def _fmt(mean: float, ci) -> str:
  text = f'{100 * mean:+.1f}'
  return text + (f' [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]' if ci else ' (1 seed)')


def _differences(per_seed: PerSeed, methods: Sequence[str], temp) -> list[str]:
  """SCoRe minus each other method, paired by seed (same base model and problems)."""
  if 'score' not in methods:
    return []
  lines = ['| SCoRe minus | seeds | Delta difference | Acc@t2 difference |', '|---|---|---|---|']
  for m in methods:
    key = f'{m}@{temp:g}'
    both = [s for s in per_seed if 'not_run' not in per_seed[s][key]]
    if m == 'score' or not both:
      continue
    diff = lambda f: [per_seed[s][f'score@{temp:g}'][f] - per_seed[s][key][f] for s in both]
    lines.append(f'| {ABLATION_LABELS[m]} | {len(both)} | '
                 f'{_fmt(*report.seed_mean_interval(diff("delta")))} | '
                 f'{_fmt(*report.seed_mean_interval(diff("acc_t2")))} |')
  return ['', 'SCoRe minus each method, in points: mean over seeds of the per-seed '
          f'difference, 95% {report.SEED_INTERVAL}.', ''] + lines


def _decoding_rows(per_seed: PerSeed, methods: Sequence[str], temp,
                   first) -> tuple[dict, list[str]]:
  """One temperature's table rows (per seed, then the seed mean) and its notes."""
  rows, notes = {}, []
  for m in methods:
    key = f'{m}@{temp:g}'
    for s, res in per_seed.items():
      if 'not_run' in res[key]:
        notes.append(f'- {ABLATION_LABELS[m]}, seed {s}: not run: {res[key]["not_run"]}')
      else:
        rows[f'{ABLATION_LABELS[m]}, seed {s}'] = res[key]
      ran_iters = res[f'{m}@{first:g}'].get('data', {}).get('iterations', 2)
      if m == 'star' and ran_iters < 2 and temp == first:
        notes.append(f'- {ABLATION_LABELS[m]}, seed {s}: only {ran_iters} of 2 iterations '
                     '(the second kept fewer traces than one SFT batch)')
    ran = [res[key] for res in per_seed.values() if 'not_run' not in res[key]]
    if ran:
      label = 'mean' if len(ran) == len(per_seed) else f'mean of {len(ran)} seeds'
      rows[f'**{ABLATION_LABELS[m]}, {label}**'] = mean_row(ran)
  return rows, notes


def ablation_table(cfg, per_seed: PerSeed, methods: Sequence[str], wall_s: float,
                   wall_note: str = '') -> str:
  """The comparison's markdown: per decoding temperature, per-seed and mean rows."""
  seeds = list(per_seed)
  first = cfg.eval.temperatures[0]
  # Every method is evaluated on the same problems; 'base' need not be among them.
  n = next((r['n'] for res in per_seed.values() for r in res.values() if 'n' in r), 0)
  lines = ['# SCoRe vs baselines on the embedded task', '',
           f'config: {cfg.workdir} ({len(seeds)} seeds: {seeds}), '
           f'{n} held-out problems. Per-seed '
           'rows: Delta with its 95% paired-bootstrap interval over problems. Mean rows: '
           f'mean over seeds, Delta with a 95% {report.SEED_INTERVAL}. The base model is '
           'trained (base_sft) on supervised synthetic corrections (configs/tiny.py).', '']
  for temp in cfg.eval.temperatures:
    kind = 'greedy' if float(temp) == 0 else f'temperature {temp:g}'
    rows, notes = _decoding_rows(per_seed, methods, temp, first)
    lines += [f'## Decoding: {kind}', '', evaluation.format_table(rows), *notes,
              *_differences(per_seed, methods, temp), '']
  lines.append(f'Wall time: {wall_s:.0f} s{wall_note} on this machine.')
  return '\n'.join(lines)


def merged_ablation_table(cfg, paths: Sequence[pathlib.Path],
                          methods: Sequence[str]) -> tuple[PerSeed, str]:
  """(merged() results, their ablation_table), e.g. of one process per seed.

  Raises:
    ValueError: a seed has no results for one of `methods` (one line).
  """
  per_seed = merged(paths)
  missing_results(per_seed, [f'{m}@{cfg.eval.temperatures[0]:g}' for m in methods], paths)
  return per_seed, ablation_table(cfg, per_seed, methods, summed_wall_s(per_seed),
                                  f' {SUMMED_WALL}')
