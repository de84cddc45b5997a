"""Resuming a run: config fingerprint, shape preflight, signals, damaged steps, metrics.

One finished 4-step run (checkpoints at steps 2 and 4) is trained once per module;
each test works on a copy of it. Resumed runs are compared bit for bit with it.
"""
import collections
import os
import pathlib
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from score_jax.training import resume as resume_lib
from score_jax.training.checkpoint import ResumeRefused
from score_jax.training.experiment import Experiment
from score_jax.training.metric_log import read_jsonl
from score_jax.training.trainer import train_score
from tests.training.tiny_config import resume_config

REPO = pathlib.Path(__file__).resolve().parents[2]
README_EXAMPLE = ["--config.train.schedule=(('stage1',200),('stage2',200))",
                  '--config.loss.alpha=5']


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  root = tmp_path_factory.mktemp('finished')
  exp = Experiment(resume_config(root))
  base = exp.init_params(0)
  result = train_score(exp, base, base)
  assert result.steps == 4
  return root, base, result


def _copy(finished, tmp_path) -> pathlib.Path:
  run = tmp_path / 'run'
  shutil.copytree(finished[0], run)
  return run


def _steps(run: pathlib.Path, where: str = 'latest') -> list[int]:
  return sorted(int(p.name) for p in (run / 'score' / 'checkpoints' / where).iterdir()
                if p.name.isdigit())


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _launch(run: pathlib.Path, *overrides: str, base_sft: bool = False):
  """launch/train.py on resume_config(run) (plus a base_sft section), as a user runs it."""
  config = run.parent / 'config.py'
  config.write_text(
      'import ml_collections\n'
      'from tests.training.tiny_config import resume_config\n\n'
      'def get_config():\n'
      f'  c = resume_config({str(run)!r})\n'
      + ('  c.base_sft = ml_collections.ConfigDict(dict(learning_rate=3e-3, warmup_steps=0, '
         'steps=50, batch_size=8, corrupt_fraction=0.5, holdout=8, target_acc_t1=0.0, '
         'check_every=0))\n' if base_sft else '')
      + '  return c\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, str(REPO / 'launch' / 'train.py'),
                         f'--config={config}', *overrides],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _one_error_line(proc) -> str:
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith('error: ')
  return lines[0]


def test_fingerprint_holds_what_is_trained_and_not_where_or_how_logged(tmp_path):
  a = resume_config(tmp_path / 'a')
  fp = resume_lib.fingerprint(a, [('stage1', 2), ('stage2', 2)], seed=0)
  assert fp['loss.alpha'] == 10.0 and fp['model.overrides.num_layers'] == 2
  assert fp['train.schedule'] == [['stage1', 2], ['stage2', 2]] and fp['seed'] == 0
  b = resume_config(tmp_path / 'b')      # another workdir, logging, eval, mesh, saving
  b.train.log_every, b.eval.num_problems, b.mesh.strategy = 5, 7, 'fsdp'
  b.checkpoint.every, b.checkpoint.keep = 1, 9
  assert resume_lib.fingerprint(b, [('stage1', 2), ('stage2', 2)], seed=0) == fp
  b.loss.alpha, b.optim.learning_rate = 5.0, 1e-3
  changed = resume_lib.fingerprint(b, [('stage1', 2), ('stage2', 3)], seed=1)
  assert resume_lib.config_changes(fp, changed) == [
      'loss.alpha: 10.0 -> 5.0', 'optim.learning_rate: 1e-05 -> 0.001', 'seed: 0 -> 1',
      'train.schedule: [["stage1", 2], ["stage2", 2]] -> [["stage1", 2], ["stage2", 3]]']


def test_readme_example_after_a_finished_run_is_refused_in_one_line(finished, tmp_path):
  run = _copy(finished, tmp_path)
  line = _one_error_line(_launch(run, *README_EXAMPLE))
  assert 'step 4 was trained with another config' in line
  assert 'loss.alpha: 10.0 -> 5.0' in line
  assert 'train.schedule: [["stage1", 2], ["stage2", 2]] -> [["stage1", 200]' in line
  assert '--config.workdir' in line and '--config.checkpoint.force_resume=True' in line
  assert _steps(run) == [2, 4]     # nothing trained, nothing saved


def test_rerun_of_a_finished_run_trains_nothing_and_says_so(finished, tmp_path, caplog):
  run = _copy(finished, tmp_path)
  _, base, done = finished
  result = train_score(Experiment(resume_config(run)), base, base)
  assert result.steps == 4 and result.history == []
  assert 'already completes this schedule (4 steps) under this config; nothing to train' in (
      caplog.text)
  _assert_same_params(result.params, done.params)


def test_force_resume_continues_under_a_changed_config_and_records_it(finished, tmp_path):
  run = _copy(finished, tmp_path)
  _, base, _ = finished
  cfg = resume_config(run)
  cfg.train.schedule = (('stage1', 2), ('stage2', 3))
  cfg.loss.alpha = 5.0
  with pytest.raises(ResumeRefused, match='loss.alpha: 10.0 -> 5.0'):
    train_score(Experiment(cfg), base, base)
  cfg.checkpoint.force_resume = True
  result = train_score(Experiment(cfg), base, base)
  assert [h['step'] for h in result.history] == [5]
  meta = (run / 'score/checkpoints/latest/5/meta/metadata').read_text()
  assert '"forced": [{"step": 4, "changes": ["loss.alpha: 10.0 -> 5.0"' in meta


def test_changed_model_is_refused_before_base_sft_in_a_fresh_process(finished, tmp_path):
  run = _copy(finished, tmp_path)
  line = _one_error_line(_launch(run, '--config.model.overrides.num_layers=3', base_sft=True))
  assert "['layers']" in line and 'is (2, ' in line and 'but (3, ' in line
  assert 'config field model.overrides.num_layers' in line
  assert not list(run.glob('base-*')) and not (run / 'base_sft').exists()


@pytest.mark.parametrize('signame', ['SIGTERM', 'SIGINT'])
def test_signal_saves_the_step_and_resume_is_bit_exact(finished, tmp_path, signame):
  run = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'tests.training.signal_worker', str(run), signame, '3'],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'finished all' not in proc.stdout
  assert f'{signame}; saved step 3 of 4' in proc.stderr
  assert _steps(run) == [3]          # no step lost: the signal's step is on disk
  _, base, done = finished
  resumed = train_score(Experiment(resume_config(run)), base, base)
  assert [h['step'] for h in resumed.history] == [4]
  assert [h['prompts'] for h in resumed.history] == [done.history[3]['prompts']]
  _assert_same_params(resumed.params, done.params)


@pytest.mark.parametrize('damage', ['truncate', 'state/manifest.ocdbt', 'meta/metadata'])
def test_damaged_latest_step_is_set_aside_and_the_run_resumes(finished, tmp_path, caplog,
                                                              damage):
  run = _copy(finished, tmp_path)
  step4 = run / 'score' / 'checkpoints' / 'latest' / '4'
  if damage == 'truncate':
    target = max((step4 / 'state').rglob('d/*'), key=lambda p: p.stat().st_size)
    os.truncate(target, target.stat().st_size // 2)
    named = f'{target.relative_to(step4)} truncated'
  else:
    (step4 / damage).unlink()
    named = f'{damage} missing'
  _, base, done = finished
  result = train_score(Experiment(resume_config(run)), base, base)
  warnings = [r.getMessage() for r in caplog.records if 'is damaged' in r.getMessage()]
  assert len(warnings) == 1 and '\n' not in warnings[0]
  assert f'checkpoint step 4 is damaged ({named}' in warnings[0]
  assert 'falling back to step 2' in warnings[0]
  assert (run / 'score' / 'checkpoints' / 'damaged' / '4').is_dir()   # moved, not deleted
  assert [h['step'] for h in result.history] == [3, 4]
  _assert_same_params(result.params, done.params)


def _tensorboard_steps(tb_dir: pathlib.Path, tag: str) -> list[int]:
  """Steps of `tag` in TFRecord event files (length, crc, Event proto, crc)."""
  from tensorboardX.proto import event_pb2
  steps = []
  for path in tb_dir.glob('events.out.tfevents.*'):
    data, i = path.read_bytes(), 0
    while i < len(data):
      n = struct.unpack('<Q', data[i:i + 8])[0]
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      steps += [event.step for v in event.summary.value if v.tag == tag]
      i += 12 + n + 4
  return sorted(steps)


def test_metrics_after_resume_hold_each_step_once(finished, tmp_path):
  run = _copy(finished, tmp_path)
  # A hard kill after step 4 was logged but before its checkpoint was written.
  shutil.rmtree(run / 'score' / 'checkpoints' / 'latest' / '4')
  _, base, done = finished
  assert _tensorboard_steps(run / 'score' / 'tensorboard', 'score/loss') == [1, 2, 3, 4]
  result = train_score(Experiment(resume_config(run)), base, base)
  assert [h['step'] for h in result.history] == [3, 4]
  lines = read_jsonl(run / 'score' / 'metrics.jsonl')
  assert [l['step'] for l in lines] == [1, 2, 3, 4]
  assert collections.Counter(_tensorboard_steps(run / 'score' / 'tensorboard', 'score/loss')) \
      == {1: 1, 2: 1, 3: 1, 4: 1}
  before = read_jsonl(finished[0] / 'score' / 'metrics.jsonl')
  assert [l['loss'] for l in lines] == [l['loss'] for l in before]
