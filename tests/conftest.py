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
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data():
  """../shared/data beside the checkout; tests that need it skip without it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f'{SHARED_DATA} not found')
  return SHARED_DATA
