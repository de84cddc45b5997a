"""Calibrates a task's difficulty knobs on a model: the base two-turn metrics per setting.

  python launch/calibrate.py --config=configs/gemma3_270m_arithmetic.py \
      --settings='[{"num_operands": 2, "digits": [2, 1]}, {"operators": "+-"}]' \
      --num_problems=64 --show=4

Each setting is a dict of task fields over config.task.fields. The weights load
once; every setting gets the base model's greedy (and config.eval.temperatures)
Acc@t1, Acc@t2 and Delta on its first --num_problems held-out problems, and
--show of its y1 / y2 texts, so a prompt format's failure is visible.
"""
from __future__ import annotations

import copy
import json
import time

from absl import flags

import common
from score_jax import evaluation
from score_jax.data import tasks as tasks_lib
from score_jax.training.base_model import load_or_train_base

SETTINGS = flags.DEFINE_string('settings', '[{}]', 'JSON list of task-field dicts.')
NUM = flags.DEFINE_integer('num_problems', 64, 'Held-out problems per setting.')
SHOW = flags.DEFINE_integer('show', 4, 'Episodes printed per setting.')
OUT = flags.DEFINE_string('out', '', 'Append one JSON line per setting here.')


def main(argv):
  cfg = common.CONFIG.value
  try:
    settings = json.loads(SETTINGS.value)
  except json.JSONDecodeError as e:
    common.fail(f'--settings: not JSON ({e}); expected a list of task-field dicts')
  if not isinstance(settings, list) or not all(isinstance(s, dict) for s in settings):
    common.fail('--settings: expected a JSON list of dicts of task fields')
  exp = common.build_experiment(cfg)
  params = load_or_train_base(exp)
  for setting in settings:
    fields = dict(cfg.task.fields.to_dict(), **{
        k: tuple(v) if isinstance(v, list) else v for k, v in setting.items()})
    exp.set_task(tasks_lib.make_task(cfg.task.name, **fields))
    examples = exp.task.load_examples('test')[:NUM.value]
    for temp in cfg.eval.temperatures:
      t0 = time.time()
      r = exp.evaluate_examples(params, examples, temperature=float(temp), seed=cfg.seed,
                                keep_ids=True)
      row = {k: v for k, v in r.items() if k not in ('r1', 'r2', 'y1', 'y2')}
      row.update(setting=setting, wall_s=round(time.time() - t0, 1))
      print(f'\n{json.dumps(setting)} T={temp:g}, {r["n"]} problems, {row["wall_s"]} s')
      print(evaluation.format_table({'base': r}))
      for e, y1, y2 in list(zip(examples, r['y1'], r['y2']))[:SHOW.value]:
        print(f'  {exp.task.first_turn_prompt(e)!r} answer {e.answer!r}: '
              f'y1 {exp.tokenizer.decode(y1)!r} '
              f'y2 {exp.tokenizer.decode(y2)!r}')
      if OUT.value:
        with common.resolve(OUT.value).open('a') as f:
          f.write(json.dumps(row, default=str) + '\n')


if __name__ == '__main__':
  common.run(main)
