"""Bad user input reaches the user as one stderr line with exit code 2 (launch/common.py).

Each case runs launch/train.py in a subprocess, as a user would, and must fail
before any model or data loads: the config is validated in full and the workdir
probed first. Cases that need a private read-only mount run under `unshare`.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
  if shutil.which('unshare') is None:
    return False
  probe = subprocess.run(['unshare', '-rm', 'true'], capture_output=True)
  return probe.returncode == 0


def _train(args, tmp_path, prefix=()):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  cmd = [*prefix, sys.executable, str(REPO / 'launch' / 'train.py'), *args]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def _bad_config_file(tmp_path):
  path = tmp_path / 'typo.py'
  path.write_text('from score_jax.config import base_config\n\n'
                  'def get_config():\n  c = base_config()\n  c.unlock()\n'
                  '  c.train.stage2_steps = 50\n  return c\n')
  return [f'--config={path}']


def _workdir_under_a_file(tmp_path):
  (tmp_path / 'a_file').write_text('')
  return ['--config=configs/tiny.py', f'--config.workdir={tmp_path}/a_file/run']


TINY = ['--config=configs/tiny.py']
# The inputs of issue 14 item 6 (every other bad field is checked in-process by
# tests/test_config.py): (id, args or a function of tmp_path, text of the one line).
CASES = [
    ('schedule_not_pairs', TINY + ['--config.train.schedule=abc'], 'config.train.schedule'),
    ('schedule_a_number', TINY + ['--config.train.schedule=5'], 'config.train.schedule'),
    ('batch_size_zero', TINY + ['--config.data.batch_size=0'], 'config.data.batch_size'),
    ('alpha_negative', TINY + ['--config.loss.alpha=-1'], 'config.loss.alpha'),
    ('adam_b2_one', TINY + ['--config.optim.b2=1.0'], 'config.optim.b2'),
    ('unknown_override', TINY + ['--config.train.nope=1'], "no config field 'nope'"),
    ('unknown_override_default_config', ['--config.loss.alpah=1'],
     'Did you mean "alpha"'),
    ('unknown_field_in_file', _bad_config_file, 'config.train.stage2_steps'),
    ('renamed_section_override', TINY + ['--config.warmup.steps=0'],
     'config.warmup is now config.base_sft (same fields); write config.base_sft.steps'),
    ('missing_config_file', ['--config=configs/nope.py'], 'configs/nope.py: no such file'),
    ('workdir_under_a_file', _workdir_under_a_file, 'config.workdir'),
    ('unknown_strategy', TINY + ['--config.mesh.strategy=zigzag'],
     "unknown sharding strategy 'zigzag'"),
    ('unknown_flag', TINY + ['--no_such_flag'], 'no_such_flag'),
]


def _assert_one_line(proc, expected):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
  assert 'Traceback' not in proc.stdout + proc.stderr


@pytest.mark.parametrize('args, expected', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_exit_code_2(args, expected, tmp_path):
  args = args(tmp_path) if callable(args) else [*args, f'--config.workdir={tmp_path}/run']
  proc = _train(args, tmp_path)
  _assert_one_line(proc, expected)
  # Refused before any work: nothing was written to the workdir.
  assert not (tmp_path / 'run').exists()


@pytest.mark.skipif(not _can_unshare(), reason='needs unshare -rm for a private mount')
def test_read_only_workdir_is_refused_up_front(tmp_path):
  mnt = tmp_path / 'ro'
  mnt.mkdir()
  script = (f'mount -t tmpfs -o ro,size=64k tmpfs {mnt} && exec "$@"')
  proc = _train(['--config=configs/tiny.py', f'--config.workdir={mnt}/run'], tmp_path,
                prefix=('unshare', '-rm', 'sh', '-c', script, 'sh'))
  _assert_one_line(proc, 'config.workdir')
  assert 'Read-only file system' in proc.stderr


def _common():
  sys.path.insert(0, str(REPO / 'launch'))
  try:
    import common  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  return common


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
def test_a_full_disk_is_one_line_even_when_wrapped():
  """A real ENOSPC (writing /dev/full), raised bare and wrapped the way Orbax re-raises."""
  common = _common()
  try:
    with open('/dev/full', 'w') as f:
      f.write('x')
      f.flush()
  except OSError as e:
    full = e
  assert common.environment_error(full).startswith('No space left on device')
  try:
    try:
      raise full
    except OSError as e:
      raise ValueError('RESOURCE_EXHAUSTED: Error writing local file "ckpt/ocdbt"') from e
  except ValueError as wrapped:
    line = common.environment_error(wrapped)
  assert line.startswith('No space left on device') and '\n' not in line
  # TensorStore's own text, with no OSError in the chain, is recognised too.
  text_only = ValueError('RESOURCE_EXHAUSTED: Failed to write: No space left on device '
                         "[os_error_code='28']")
  assert 'No space left on device' in common.environment_error(text_only)
  assert common.environment_error(ValueError('a bug')) is None


@pytest.mark.parametrize('script,config', [('compare.py', 'configs/tiny.py'),
                                           ('dpo.py', 'configs/tiny_dpo.py')])
def test_merge_of_a_missing_file_names_the_flag_and_the_file(script, config, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  gone, out = tmp_path / 'seed1.json', tmp_path / 'table.md'
  proc = subprocess.run([sys.executable, str(REPO / 'launch' / script), f'--config={config}',
                         f'--merge={gone}', f'--out={out}'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  _assert_one_line(proc, f'--merge: {gone}: no such file')
  assert not out.exists()


def test_pairs_of_a_missing_file_is_one_line_naming_the_file(tmp_path):
  gone = tmp_path / 'pairs.jsonl'
  proc = subprocess.run([sys.executable, str(REPO / 'launch' / 'dpo.py'),
                         '--config=configs/tiny_dpo.py', '--methods=dpo_pairs',
                         f'--pairs={gone}', f'--out={tmp_path / "t.md"}'], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
                        text=True, timeout=300)
  _assert_one_line(proc, f'{gone}: file not found')
