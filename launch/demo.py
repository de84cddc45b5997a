"""The embedded default, end to end: base_sft -> base eval -> Stage I -> Stage II -> eval.

  python launch/demo.py --config=configs/tiny.py        (what `make demo` runs)

Prints the paper's metric table for the base model and for SCoRe on held-out
problems (greedy and at temperature 1), then where the results, metrics JSONL,
TensorBoard logs, checkpoints and the Acc@t1/Acc@t2 plot were written. A rerun
reuses the cached base model and the finished SCoRe checkpoint.
"""
from __future__ import annotations

import json
import time

from absl import logging

import common  # pylint: disable=unused-import  (sets sys.path, defines --config)
from score_jax.training import report
from score_jax.training.base_model import load_or_train_base
from score_jax.training.trainer import check_resume, train_score


def main(argv):
  cfg = common.CONFIG.value
  common.maybe_initialize_distributed(cfg)
  t_start = time.time()
  exp = common.build_experiment(cfg)
  check_resume(exp, phase='score')   # refuses (UserError: one line) before base_sft
  timings = {}

  t0 = time.time()
  base = load_or_train_base(exp)
  timings['base_sft_s'] = time.time() - t0

  results: dict[str, dict] = {}
  t0 = time.time()
  for temp in cfg.eval.temperatures:
    results[f'base@T={temp:g}'] = exp.evaluate(base, temperature=float(temp), seed=cfg.seed)
  timings['base_eval_s'] = time.time() - t0

  t0 = time.time()
  score = train_score(exp, base, base, phase='score')
  timings['score_train_s'] = time.time() - t0

  t0 = time.time()
  for temp in cfg.eval.temperatures:
    results[f'SCoRe@T={temp:g}'] = exp.evaluate(score.params, temperature=float(temp),
                                                seed=cfg.seed)
  timings['final_eval_s'] = time.time() - t0
  timings['total_s'] = time.time() - t_start

  paths = report.write_run_report(exp, results, timings, phase='score')
  print('\n' + report.tables_by_decoding(results))
  print('\nNote: the base model was trained (base_sft) on supervised synthetic corrections '
        '(see configs/tiny.py).')
  print(f'\nwall time: {json.dumps({k: round(v, 1) for k, v in timings.items()})}')
  for what, where in paths.items():
    print(f'{what:>12}: {where}')
  logging.info('done')


if __name__ == '__main__':
  common.run(main)
