"""The study over seeds: incremental writes, seed means, per-seed configs, the table.

Expected numbers are derived by hand (Student-t quantiles from a table), not
from score_jax.training.report.
"""
import json

import ml_collections
import pytest

from score_jax.training import study
from tests.training.tiny_config import tiny_config

T_975_DF1 = 12.706204736   # Student-t 0.975 quantile, 1 degree of freedom
T_975_DF2 = 4.302652730    # 2 degrees of freedom


def _row(delta, acc_t2=0.5, ci=(-0.1, 0.1)):
  return {'acc_t1': 0.5, 'acc_t2': acc_t2, 'delta': delta, 'delta_i_to_c': 0.2,
          'delta_c_to_i': 0.1, 'edit_ratio': 0.5, 'ci': ci, 'n': 15}


def test_run_seeds_rewrites_table_and_json_after_every_seed(tmp_path):
  out = tmp_path / 'sub' / 'study.md'
  seen = []

  def run_one(seed):
    # What is on disk when seed `seed` starts: the seeds before it, both files.
    if seen:
      assert out.read_text() == f'seeds {seen}\n'
      assert json.loads(out.with_suffix('.json').read_text()) == {
          str(s): {'value': 10 * s} for s in seen}
    else:
      assert not out.exists()
    if seed == 7:
      raise RuntimeError('seed 7 crashed')
    seen.append(seed)
    return {'value': 10 * seed}

  with pytest.raises(RuntimeError, match='seed 7'):
    study.run_seeds([3, 1, 7], run_one, lambda per_seed, _: f'seeds {list(per_seed)}', out)
  # The crash left the two finished seeds reported.
  assert out.read_text() == 'seeds [3, 1]\n'
  per_seed, text = study.run_seeds([3, 1], lambda s: {'value': 10 * s},
                                   lambda p, wall_s: f'{sorted(p)} {wall_s >= 0}', out)
  assert per_seed == {3: {'value': 30}, 1: {'value': 10}}
  assert text == '[1, 3] True' and out.read_text() == text + '\n'


def test_mean_row_t_interval_over_seeds_by_hand():
  rows = [_row(0.1, ci=(0.0, 0.2)), _row(0.2, ci=(0.1, 0.3)), _row(0.3, ci=(0.2, 0.4))]
  got = study.mean_row(rows)
  # mean 0.2, sd 0.1 (ddof 1), half width t * 0.1 / sqrt(3).
  half = T_975_DF2 * 0.1 / 3 ** 0.5
  assert got['delta'] == pytest.approx(0.2)
  assert got['ci'] == pytest.approx((0.2 - half, 0.2 + half), abs=1e-8)
  assert got['n'] == 15 and got['acc_t1'] == pytest.approx(0.5)
  assert study.mean_row(rows[:1])['ci'] is None   # one seed: no interval


def test_seed_config_replaces_seed_workdir_stage_and_fields(tmp_path):
  cfg = tiny_config(tmp_path)
  cfg.train.schedule = (('stage1', 5), ('stage2', 7))
  cfg.lock()
  c = study.seed_config(cfg, 4, stage='stage2', **{'loss.alpha': 0.0})
  assert (c.seed, c.workdir, c.train.schedule) == (4, f'{tmp_path}/seed4', (('stage2', 7),))
  assert c.loss.alpha == 0.0 and cfg.loss.alpha != 0.0   # the study's config is untouched
  assert cfg.train.schedule == (('stage1', 5), ('stage2', 7)) and cfg.workdir == str(tmp_path)
  plain = study.seed_config(cfg, 1)
  assert plain.train.schedule == cfg.train.schedule and plain.loss.alpha == cfg.loss.alpha


def test_ablation_table_means_differences_and_not_run_by_hand():
  cfg = ml_collections.ConfigDict({'workdir': 'runs/x', 'eval': {'temperatures': (0.0,)}})
  per_seed = {
      0: {'base@0': _row(0.0, acc_t2=0.4), 'score@0': _row(0.1, acc_t2=0.5),
          'star@0': {'not_run': 'too few traces'}},
      1: {'base@0': _row(0.0, acc_t2=0.4), 'score@0': _row(0.3, acc_t2=0.6),
          'star@0': {'not_run': 'too few traces'}},
  }
  text = study.ablation_table(cfg, per_seed, ['base', 'star', 'score'], 12.4)
  # SCoRe mean Delta 20.0 points; t-interval 20 +- 12.706 * sd(10, 30) / sqrt(2) = 20 +- 127.1.
  half = 100 * T_975_DF1 * (0.2 ** 2 / 2) ** 0.5 / 2 ** 0.5
  assert f'| **SCoRe, mean** | 50.0 | 55.0 | 20.0 [{20 - half:.1f}, {20 + half:.1f}] |' in text
  # SCoRe minus base, paired by seed: Delta 10 and 30, Acc@t2 10 and 20 points.
  half_acc = 100 * T_975_DF1 * (0.1 ** 2 / 2) ** 0.5 / 2 ** 0.5
  assert ('| SCoRe w/o Stage I |' not in text and
          f'| base (= Self-Refine) | 2 | +20.0 [{20 - half:+.1f}, {20 + half:+.1f}] | '
          f'+15.0 [{15 - half_acc:+.1f}, {15 + half_acc:+.1f}] |' in text)
  assert '- STaR (D+), seed 0: not run: too few traces' in text
  assert 'STaR (D+), mean' not in text and '| SCoRe minus |' in text
  assert '15 held-out problems' in text and text.endswith('Wall time: 12 s on this machine.')


def test_ablation_table_without_the_base_row():
  cfg = ml_collections.ConfigDict({'workdir': 'runs/x', 'eval': {'temperatures': (0.0,)}})
  text = study.ablation_table(cfg, {0: {'score@0': _row(0.1)}}, ['score'], 1.0)
  # One seed: the mean row repeats the seed's Delta and has no interval.
  assert '15 held-out problems' in text and '| **SCoRe, mean** | 50.0 | 50.0 | 10.0 - |' in text


def test_merged_joins_methods_per_seed_in_seed_order(tmp_path):
  a, b = tmp_path / 'a.json', tmp_path / 'b.json'
  a.write_text(json.dumps({'2': {'base': {'x': 1}}, '0': {'base': {'x': 2}}}))
  b.write_text(json.dumps({'0': {'score': {'x': 3}, 'base': {'x': 4}}}))
  got = study.merged([a, b])
  assert list(got) == [0, 2]   # int seeds, sorted
  # seed 0: both files' methods; the later file wins where both have one.
  assert got == {0: {'base': {'x': 4}, 'score': {'x': 3}}, 2: {'base': {'x': 1}}}


@pytest.mark.parametrize('name,text,says', [
    ('gone.json', None, 'no such file'),
    ('trunc.json', '{"0": {"score@0"', 'not JSON'),
    ('list.json', '[1, 2]', 'not a results file'),
    ('bad_seed.json', '{"zero": {}}', 'not a results file'),
])
def test_merged_bad_file_is_one_line_naming_it(tmp_path, name, text, says):
  good, bad = tmp_path / 'good.json', tmp_path / name
  good.write_text(json.dumps({'0': {'base': {'x': 1}}}))
  if text is not None:
    bad.write_text(text)
  with pytest.raises(ValueError) as e:
    study.merged([good, bad])
  msg = str(e.value)
  assert msg.startswith(f'{bad}: {says}') and '\n' not in msg
  assert 'expected the .json results file of an earlier run' in msg


def test_merged_ablation_table_joins_seeds_run_apart(tmp_path):
  cfg = ml_collections.ConfigDict({'workdir': 'runs/x', 'eval': {'temperatures': (0.0,)}})
  # Seeds 0 and 1 from two processes; seed 1's file also holds a method seed 0 lacks.
  a, b = tmp_path / 'seed0.json', tmp_path / 'seed1.json'
  a.write_text(json.dumps({'0': {'score@0': {**_row(0.1), 'wall_s': 100.4}}}))
  b.write_text(json.dumps({'1': {'score@0': {**_row(0.3), 'wall_s': 50.3},
                                 'base@0': _row(0.0)}}))
  per_seed, text = study.merged_ablation_table(cfg, [a, b], ['score'])
  assert list(per_seed) == [0, 1]
  # Mean Delta 20 points over seeds 10 and 30: t-interval 20 +- 12.706 * 14.14 / sqrt(2).
  half = 100 * T_975_DF1 * (0.2 ** 2 / 2) ** 0.5 / 2 ** 0.5
  assert f'| **SCoRe, mean** | 50.0 | 50.0 | 20.0 [{20 - half:.1f}, {20 + half:.1f}] |' in text
  assert '(2 seeds: [0, 1])' in text
  assert text.endswith('Wall time: 151 s summed over the methods (without the base_sft '
                       'phases) on this machine.')
  with pytest.raises(ValueError, match=r"seed0.json, .*seed1.json: seed 0 has no results "
                                       r"for \['base@0'\]"):
    study.merged_ablation_table(cfg, [a, b], ['base', 'score'])
