"""Shared start-up of the absl launch scripts: config flag, logging, distributed init."""
from __future__ import annotations

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as `python launch/x.py` from anywhere
  sys.path.insert(0, _REPO)

CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(_REPO, 'configs', 'tiny.py'),
    'Experiment config file (a get_config() returning a ConfigDict); override any '
    'field with --config.section.field=value.', lock_config=True)
DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize() (multi-host). Default: '
    'config.mesh.distributed, or on when a TPU pod / coordinator env is detected.')
COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                  'host:port of process 0 (non-TPU multi-process).')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')


def maybe_initialize_distributed(cfg) -> None:
  """jax.distributed.initialize when asked by flag or config, or on a multi-host TPU."""
  import jax  # pylint: disable=g-import-not-at-top
  wanted = DISTRIBUTED.value
  if wanted is None:
    wanted = bool(cfg.mesh.distributed) or bool(COORDINATOR.value) or (
        'TPU_WORKER_HOSTNAMES' in os.environ
        and ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''))
  if not wanted:
    return
  kwargs = {}
  if COORDINATOR.value:
    kwargs = dict(coordinator_address=COORDINATOR.value,
                  num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)
  jax.distributed.initialize(**kwargs)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def fail(message: str) -> None:
  """Exit with a one-line explanation (no traceback) for bad flags or config."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing that reports any bad flag or config override in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown or ill-typed --config.x.y override.
    overrides = [a for a in argv[1:] if a.startswith('--config.')]
    fail(f'bad config override {overrides}: {type(e).__name__}: {e}')


def run(main) -> None:
  """app.run with one-line errors for bad flags and config overrides."""
  from absl import app  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    if len(argv) > 1:
      fail(f'unexpected arguments {argv[1:]}')
    # Orbax and grain log every save at INFO; keep the console to progress bars
    # and results unless asked (--verbosity=0 for INFO).
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  app.run(guarded, flags_parser=_parse_flags)


def build_experiment(cfg):
  """The run's Experiment; a config it cannot build from exits with one line."""
  from score_jax.training.experiment import Experiment  # pylint: disable=g-import-not-at-top
  try:
    return Experiment(cfg)
  except (ValueError, FileNotFoundError) as e:
    fail(str(e))


def resolve(path: str):
  """A path from a flag: relative paths are taken from the repo root."""
  from score_jax.config import resolve_path  # pylint: disable=g-import-not-at-top
  return resolve_path(path)
