"""The preference-tuning study: DPO with each scorer, RLAIF and SCoRe from one base per seed.

launch/dpo.py parses flags and calls this module, as launch/compare.py calls
score_jax.training.study (whose seed_config, run_seeds and mean_row it reuses):

  per_seed, text = training_study.run_seeds(
      seeds, lambda s: run_seed(cfg, s, methods, settings, build),
      lambda per_seed, wall_s: table(cfg, per_seed, methods, f'{wall_s:.0f} s',
                                     settings.pair_problems), out)

Per seed every method starts from the same base (= reference) model and is
evaluated greedily on the same held-out problems. Before training, the base's
samples measure how often each label-free scorer orders two samples of a prompt
as the true reward does (pair accuracy).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from score_jax import evaluation
from score_jax.preference import data as data_lib
from score_jax.preference import judge as judge_lib
from score_jax.preference import offline
from score_jax.preference import online as online_lib
from score_jax.preference import scorers as scorers_lib
from score_jax.training import study as training_study
from score_jax.training.base_model import load_or_train_base
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_score

SCORE_SCHEDULE = (('stage1', 400), ('stage2', 300))   # configs/tiny.py's
LABELS = {'base': 'base', 'score': 'SCoRe (true reward)',
          'score_judge': 'SCoRe, judge P(yes) as reward (RLAIF)'}
LABELS |= {f'dpo_{s}': f'DPO, {s} pairs' for s in scorers_lib.SCORERS}
LABELS['dpo_pairs'] = 'DPO, pairs from --pairs (offline)'


@dataclasses.dataclass(frozen=True)
class PreferenceSettings:
  """What the study adds to the config: the pair-accuracy check and offline pairs.

  pair_problems: training problems whose base samples measure pair accuracy.
  pairs: the preference pairs of the 'dpo_pairs' row (offline DPO), if any.
  pairs_steps: its offline DPO steps.
  """
  pair_problems: int = 256
  pairs: tuple[data_lib.PreferencePair, ...] = ()
  pairs_steps: int = 100


def pair_accuracies(exp: Experiment, base, seed: int, num_problems: int) -> dict:
  """Each label-free scorer's pair accuracy vs the oracle on the base's samples."""
  k = exp.cfg.train.samples_per_prompt
  examples = exp.task.load_examples('train')[:num_problems]
  judge = online_lib.make_judge(exp, base)
  names = [s for s in scorers_lib.SCORERS if s != 'oracle']
  fns = {s: scorers_lib.make_scorer(s, exp, judge) for s in names}
  scores, oracle = {s: [] for s in names}, []
  params = exp.for_sampling(base)
  key = jax.random.key(seed + 17)
  pipe = exp.pipeline(examples, exp.cfg.data.batch_size, seed=seed, train=False)
  attempts = exp.two_attempts(float(exp.cfg.sampling.temperature))
  for i, prompts in enumerate(pipe):
    prompts = prompts.repeat(k)
    at = attempts(params, prompts, examples, jax.random.fold_in(key, i))
    if not at.real_B.all():   # a padded last batch: groups would mix real and pad rows
      continue
    exs = [examples[j] for j in np.asarray(prompts.index_B)]
    oracle.append(at.r1_B + at.r2_B)
    for s in names:
      scores[s].append(fns[s](at, exs, k))
  oracle = np.concatenate(oracle)
  return {s: scorers_lib.pair_accuracy(np.concatenate(v), oracle, k) for s, v in scores.items()}


def train_method(cfg, seed: int, m: str, base, settings: PreferenceSettings,
                 build: Callable = Experiment):
  """Params of method `m` trained from `base` (the reference too)."""
  seed_config = training_study.seed_config
  if m == 'dpo_pairs':
    exp = build(seed_config(cfg, seed))
    batch = data_lib.pack_pairs(exp, settings.pairs)
    return offline.train_pairs(exp, base, base, batch, steps=settings.pairs_steps,
                               pairs_per_step=cfg.data.batch_size, seed=seed)
  if m.startswith('dpo_'):
    exp = build(seed_config(cfg, seed, **{'dpo.scorer': m[4:]}))
    return train_score(exp, base, base, phase=m).params
  exp = build(seed_config(cfg, seed, **{'train.schedule': SCORE_SCHEDULE}))
  if m == 'score_judge':
    exp.task = judge_lib.JudgeRewardTask(exp.task, online_lib.make_judge(exp, base))
  return train_score(exp, base, base, phase=m).params


def run_seed(cfg, seed: int, methods: Sequence[str],
             settings: PreferenceSettings = PreferenceSettings(),
             build: Callable = Experiment) -> dict[str, Any]:
  """One seed: its base's pair accuracies, then every method of `methods`, greedy.

  `build` makes an Experiment of a config (launchers pass one that validates
  with one-line errors).

  Returns:
    'pair_accuracy' -> scorer -> pair_accuracy() fields, and per method its
    summarize() fields without r1/r2, plus 'wall_s'.
  """
  exp = build(training_study.seed_config(cfg, seed))
  base = load_or_train_base(exp)
  out = {'pair_accuracy': pair_accuracies(exp, base, seed, settings.pair_problems)}
  print(f'seed {seed} pair accuracy vs oracle: ' + ', '.join(
      f'{s}={v["pair_accuracy"]:.3f}' for s, v in out['pair_accuracy'].items()), flush=True)
  for m in methods:
    t0 = time.time()
    params = base if m == 'base' else train_method(cfg, seed, m, base, settings, build)
    r = exp.evaluate(params, temperature=0.0, seed=seed)
    out[m] = {k: v for k, v in r.items() if k not in ('r1', 'r2')}
    out[m]['wall_s'] = time.time() - t0
    print(f'seed {seed} {LABELS[m]}: t1={r["acc_t1"]:.3f} t2={r["acc_t2"]:.3f} '
          f'({out[m]["wall_s"]:.0f} s)', flush=True)
  return out


def _pair_accuracy_lines(per_seed: training_study.PerSeed) -> list[str]:
  """Per scorer: its pair accuracy per seed, the mean, and the mean tie fraction."""
  seeds = list(per_seed)
  lines = ['| scorer | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean | ties |',
           '|---' * (len(seeds) + 3) + '|']
  for name in per_seed[seeds[0]]['pair_accuracy']:
    accs = [per_seed[s]['pair_accuracy'][name] for s in seeds]
    lines.append(f'| {name} | ' + ' | '.join(f'{a["pair_accuracy"]:.3f}' for a in accs)
                 + f' | {np.mean([a["pair_accuracy"] for a in accs]):.3f}'
                 + f' | {np.mean([a["ties"] for a in accs]):.2f} |')
  return lines


def table(cfg, per_seed: training_study.PerSeed, methods: Sequence[str], wall: str,
          pair_problems: int) -> str:
  """The study's markdown: per-seed and mean rows per method, then pair accuracies."""
  seeds = list(per_seed)
  n = per_seed[seeds[0]][methods[0]]['n']
  rows = {}
  for m in methods:
    for s in seeds:
      rows[f'{LABELS[m]}, seed {s}'] = per_seed[s][m]
    rows[f'**{LABELS[m]}, mean**'] = training_study.mean_row([per_seed[s][m] for s in seeds])
  lines = ['# Preference tuning vs SCoRe on the embedded task', '',
           f'config: {cfg.workdir} ({len(seeds)} seeds: {seeds}), {n} held-out problems, '
           'greedy. Delta with its paired-bootstrap 95% interval (mean row: 95% '
           't-interval over the seeds\' Deltas).', '', evaluation.format_table(rows), '',
           '## Pair accuracy vs the oracle reward', '',
           f'Base-model samples ({cfg.train.samples_per_prompt} per prompt, '
           f'{pair_problems} training problems): within-prompt pairs whose true '
           'reward r1 + r2 differs; a tie in the score counts one half.', '',
           *_pair_accuracy_lines(per_seed)]
  lines += ['', f'Wall time: {wall} on this machine (shared with other jobs).']
  return '\n'.join(lines)


def merged_table(cfg, paths: Iterable[pathlib.Path], methods: Sequence[str],
                 pair_problems: int) -> str:
  """The table of merged() runs; wall time is their methods' wall_s summed.

  Raises:
    ValueError: a seed has no results for one of `methods` (one line).
  """
  paths = list(paths)
  per_seed = training_study.merged(paths)
  training_study.missing_results(per_seed, methods, paths)
  return table(cfg, per_seed, methods,
               f'{training_study.summed_wall_s(per_seed):.0f} s {training_study.SUMMED_WALL}',
               pair_problems)
