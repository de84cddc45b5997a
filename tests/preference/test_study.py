"""The preference study's merge and table (score_jax.preference.study), by hand.

Expected numbers are derived by hand (the Student-t quantile from a table), not
from score_jax.training.report.
"""
import json

import ml_collections
import pytest

from score_jax.preference import study

T_975_DF1 = 12.706204736   # Student-t 0.975 quantile, 1 degree of freedom


def _row(delta, wall_s=None):
  row = {'acc_t1': 0.5, 'acc_t2': 0.5 + delta, 'delta': delta, 'delta_i_to_c': 0.2,
         'delta_c_to_i': 0.1, 'edit_ratio': 0.25, 'ci': (delta - 0.1, delta + 0.1), 'n': 40}
  return row if wall_s is None else dict(row, wall_s=wall_s)


def _accuracies(confidence, ties):
  return {'confidence': {'pair_accuracy': confidence, 'pairs': 10, 'ties': ties}}


def test_table_rows_mean_interval_and_pair_accuracy_by_hand():
  cfg = ml_collections.ConfigDict({'workdir': 'runs/p', 'train': {'samples_per_prompt': 8}})
  per_seed = {0: {'pair_accuracy': _accuracies(0.5, 0.1), 'base': _row(0.0),
                  'dpo_oracle': _row(0.1)},
              1: {'pair_accuracy': _accuracies(0.75, 0.2), 'base': _row(0.0),
                  'dpo_oracle': _row(0.3)}}
  text = study.table(cfg, per_seed, ['base', 'dpo_oracle'], '12 s', pair_problems=64)
  lines = text.splitlines()
  assert lines[0] == '# Preference tuning vs SCoRe on the embedded task'
  assert lines[2].startswith('config: runs/p (2 seeds: [0, 1]), 40 held-out problems, greedy.')
  # DPO mean: Deltas 0.1 and 0.3: mean 0.2, sd sqrt(0.02), half = t * 0.1.
  half = 100 * T_975_DF1 * 0.1
  mean = '| **DPO, oracle pairs, mean** | 50.0 | 70.0 | 20.0 '
  assert f'{mean}[{20 - half:.1f}, {20 + half:.1f}] | 20.0 | 10.0 | 0.25 |' in lines
  assert ('| DPO, oracle pairs, seed 1 | 50.0 | 80.0 | 30.0 [20.0, 40.0] | 20.0 | 10.0 | 0.25 |'
          in lines)
  assert '| **base, mean** | 50.0 | 50.0 | 0.0 [0.0, 0.0] | 20.0 | 10.0 | 0.25 |' in lines
  assert [l for l in lines if l.startswith('| method')] == [
      '| method | Acc@t1 | Acc@t2 | Delta (95% CI) | Delta_i->c | Delta_c->i | edit ratio |']
  assert 'Base-model samples (8 per prompt, 64 training problems)' in text
  # Pair accuracy: mean (0.5 + 0.75) / 2, ties (0.1 + 0.2) / 2.
  assert lines[-5:] == ['| scorer | seed 0 | seed 1 | mean | ties |', '|---|---|---|---|---|',
                        '| confidence | 0.500 | 0.750 | 0.625 | 0.15 |', '',
                        'Wall time: 12 s on this machine (shared with other jobs).']


def test_merged_table_sums_the_methods_wall_time(tmp_path):
  cfg = ml_collections.ConfigDict({'workdir': 'runs/p', 'train': {'samples_per_prompt': 4}})
  a, b = tmp_path / 'a.json', tmp_path / 'b.json'
  a.write_text(json.dumps({'0': {'pair_accuracy': _accuracies(0.5, 0.0),
                                 'base': _row(0.0, wall_s=10.4)}}))
  b.write_text(json.dumps({'0': {'score': _row(0.2, wall_s=20.3)}}))
  text = study.merged_table(cfg, [a, b], ['base', 'score'], pair_problems=16)
  assert text.endswith('Wall time: 31 s summed over the methods (without the base_sft '
                       'phases) on this machine (shared with other jobs).')
  # One seed: the mean row has no interval.
  assert '| **SCoRe (true reward), mean** | 50.0 | 70.0 | 20.0 - | 20.0 | 10.0 | 0.25 |' in text
  with pytest.raises(ValueError, match=r"seed 0 has no results for \['score'\]"):
    study.merged_table(cfg, [a], ['base', 'score'], pair_problems=16)
