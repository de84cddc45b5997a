"""What a finished run leaves behind: results JSON, a markdown table, a PNG plot.

Also the interval for a mean over seeds (`seed_mean_interval`), which the
comparison over seeds (launch/compare.py) reports for its mean rows.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from score_jax import evaluation
from score_jax.training.experiment import Experiment
from score_jax.training.metric_log import read_jsonl


def _jsonable(summary: dict) -> dict:
  return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in summary.items()
          if k not in ('r1', 'r2')}


SEED_INTERVAL = 't-interval over the per-seed values (n - 1 degrees of freedom)'


def seed_mean_interval(values, confidence: float = 0.95) -> tuple[float, tuple | None]:
  """Mean over seeds and its Student-t interval: mean +- t * sd / sqrt(n).

  Seeds are the independent replicates (each its own base model and training
  run), so the interval reflects seed-to-seed variation, which the per-seed
  bootstrap over problems does not. Averaging per-seed bounds is not an
  interval for the mean. One seed has no interval (None).
  """
  x = np.asarray(values, np.float64)
  mean = float(np.mean(x))
  if x.size < 2:
    return mean, None
  import scipy.stats  # pylint: disable=g-import-not-at-top  (a dependency of jax)
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2, x.size - 1)
               * np.std(x, ddof=1) / np.sqrt(x.size))
  return mean, (mean - half, mean + half)


def plot_accuracy(metrics_jsonl: pathlib.Path, out_png: pathlib.Path,
                  schedule=()) -> pathlib.Path | None:
  """Acc@t1 / Acc@t2 of the training rollouts over steps, stage boundary marked."""
  if not metrics_jsonl.exists():
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  by_step = {r['step']: r for r in read_jsonl(metrics_jsonl) if 'acc_t1' in r}
  steps = sorted(by_step)
  if not steps:
    return None
  fig, ax = plt.subplots(figsize=(7, 4))
  for key, label in (('acc_t1', 'Acc@t1'), ('acc_t2', 'Acc@t2')):
    ax.plot(steps, [by_step[s][key] for s in steps], label=label)
  boundary = 0
  for stage, n in schedule:
    ax.axvline(boundary, color='gray', lw=0.8, ls='--')
    ax.text(boundary, 1.0, f' {stage}', transform=ax.get_xaxis_transform(), va='top',
            fontsize=8, color='gray')
    boundary += int(n)
  ax.set_xlabel('training step')
  ax.set_ylabel('accuracy of training rollouts (T=1)')
  ax.set_title('SCoRe: first and second attempt during training')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)
  return out_png


def tables_by_decoding(results: dict[str, dict]) -> str:
  """One markdown table per decoding temperature; keys look like 'SCoRe@T=0'."""
  groups: dict[str, dict[str, dict]] = {}
  for name, r in results.items():
    method, _, temp = name.partition('@T=')
    groups.setdefault(temp, {})[method] = r
  parts = []
  for temp, rows in groups.items():
    kind = 'greedy' if float(temp) == 0 else f'temperature {temp}'
    n = next(iter(rows.values()))['n']
    parts.append(f'Held-out problems: {n}, decoding: {kind}\n\n' + evaluation.format_table(rows))
  return '\n\n'.join(parts)


def write_run_report(exp: Experiment, results: dict[str, dict], timings: dict,
                     phase: str) -> dict[str, pathlib.Path]:
  out = exp.workdir
  out.mkdir(parents=True, exist_ok=True)
  results_json = out / 'results.json'
  results_json.write_text(json.dumps(
      {'results': {k: _jsonable(v) for k, v in results.items()}, 'timings_s': timings,
       'config': exp.cfg.to_dict()}, indent=1, default=str))
  table_md = out / 'results.md'
  table_md.write_text(tables_by_decoding(results) + '\n')
  paths = {'results': results_json, 'table': table_md,
           'metrics': out / phase / 'metrics.jsonl', 'tensorboard': out / phase / 'tensorboard',
           'checkpoints': out / phase / 'checkpoints'}
  png = plot_accuracy(out / phase / 'metrics.jsonl', out / 'accuracy.png',
                      schedule=exp.cfg.train.schedule)
  if png is not None:
    paths['plot'] = png
  return paths
