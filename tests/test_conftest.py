"""The shared-data fixture of tests/conftest.py: skips locally, fails under CI=true."""
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NEEDS_DATA = 'tests/data/test_code.py::test_mbpp_standard_splits'


def _pytest(tmp_path, ci: str | None):
  env = {k: v for k, v in os.environ.items() if k != 'CI'}
  env['SCORE_JAX_DATA'] = str(tmp_path / 'no-data-here')
  if ci is not None:
    env['CI'] = ci
  return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                         NEEDS_DATA], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def test_missing_data_skips_locally_with_one_summary_line(tmp_path):
  proc = _pytest(tmp_path, ci=None)
  assert proc.returncode == 0, proc.stdout[-3000:]
  assert '1 skipped' in proc.stdout
  summary = [l for l in proc.stdout.splitlines() if 'tests skipped:' in l]
  assert len(summary) == 1 and 'no-data-here not found' in summary[0], proc.stdout


@pytest.mark.parametrize('ci', ['true', '1'])
def test_missing_data_fails_under_ci(tmp_path, ci):
  proc = _pytest(tmp_path, ci=ci)
  assert proc.returncode != 0, proc.stdout[-3000:]
  assert '1 error' in proc.stdout and 'CI=true needs' in proc.stdout, proc.stdout[-3000:]
  assert 'skipped' not in proc.stdout.splitlines()[-1]
