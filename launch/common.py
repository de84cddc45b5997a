"""Shared start-up of the absl launch scripts: config flag, logging, distributed init."""
from __future__ import annotations

import errno
import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as `python launch/x.py` from anywhere
  sys.path.insert(0, _REPO)


def fail(message: str) -> None:
  """Exit 2 with a one-line explanation (no traceback) for bad input."""
  print(f'error: {" ".join(str(message).split())}', file=sys.stderr)
  sys.exit(2)


def _config_file_arg(argv) -> str | None:
  """The --config=PATH value on the command line (without any ':args' suffix)."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1].split(':', 1)[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':', 1)[0]
  return None


def _override_error(argv, e: Exception) -> str:
  """One line for a --config.x.y override that ml_collections refused."""
  overrides = [a[2:].split('=', 1)[0] for a in argv if a.startswith('--config.')]
  raw = e
  while isinstance(raw, BaseException) and raw.args:  # KeyError inside AttributeError
    raw = raw.args[0]
  text = ' '.join(str(raw).split())
  if isinstance(e, (AttributeError, KeyError)):
    from score_jax.config import renamed_section_error  # pylint: disable=g-import-not-at-top
    for o in overrides:
      if renamed_section_error(o.split('.', 1)[1]):
        return '--' + renamed_section_error(o.split('.', 1)[1])
    for o in overrides:   # the override whose path holds the missing name
      for part in o.split('.')[1:]:
        if f"'{part}'" in text:
          hint = text[text.index('Did you mean'):] if 'Did you mean' in text else ''
          return (f"--{o}: no config field '{part}' there (fields are listed in "
                  f'score_jax/config.py base_config and the --config file). {hint}')
  return f'bad config override {overrides}: {type(e).__name__}: {text}'


def _define_config():
  path = _config_file_arg(sys.argv)
  if path is not None and not os.path.isfile(path):
    fail(f'--config={path}: no such file (relative to {os.getcwd()})')
  try:
    # With no --config on the command line, the default file is loaded and the
    # overrides applied right here, at import: their errors surface here too.
    return config_flags.DEFINE_config_file(
        'config', os.path.join(_REPO, 'configs', 'tiny.py'),
        'Experiment config file (a get_config() returning a ConfigDict); override any '
        'field with --config.section.field=value.', lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    fail(_override_error(sys.argv, e))


CONFIG = _define_config()
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


def _parse_flags(argv):
  """absl flag parsing that reports any bad flag or config override in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown or ill-typed --config.x.y override.
    fail(_override_error(argv, e))


# A full disk, a read-only mount or a denied path is the machine's state, not a bug.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_ENVIRONMENT_TEXTS = ('No space left on device', 'Disk quota exceeded',
                      'Read-only file system')


def environment_error(e: BaseException) -> str | None:
  """One line if `e` (or an exception it wraps) is a disk/permission error, else None.

  Orbax and TensorStore re-raise write failures under their own types (or from a
  background thread), so the cause chain and the messages are both searched.
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
      where = f' ({e.filename})' if e.filename else ''
      return (f'{e.strerror or os.strerror(e.errno)}{where}; free space or fix '
              'permissions, then rerun (it resumes from the last checkpoint)')
    text = str(e)
    for needle in _ENVIRONMENT_TEXTS:
      if needle in text:
        return f'{needle} while writing: {" ".join(text.split())[:300]}'
    e = e.__cause__ or e.__context__
  return None


def run(main) -> None:
  """app.run with one-line errors (exit 2) for bad flags, config and environment."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from score_jax.errors import UserError  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    if len(argv) > 1:
      fail(f'unexpected arguments {argv[1:]}')
    # Orbax and grain log every save at INFO; keep the console to progress bars
    # and results unless asked (--verbosity=0 for INFO).
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except UserError as e:
      fail(str(e))
    except Exception as e:  # pylint: disable=broad-except
      message = environment_error(e)
      if message is None:
        raise
      fail(message)

  app.run(guarded, flags_parser=_parse_flags)


def check_workdir(cfg) -> None:
  """config.workdir must be creatable and writable: checked before any work."""
  workdir = resolve(cfg.workdir)
  probe = workdir / f'.write-test-{os.getpid()}'
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b'')
    probe.unlink()
  except OSError as e:
    fail(f'config.workdir={cfg.workdir}: cannot write there ({e.strerror or e}); '
         'choose a writable directory with --config.workdir=...')


def build_experiment(cfg):
  """The run's Experiment: config validated in full and workdir checked, before any work."""
  from score_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from score_jax.training.experiment import Experiment  # pylint: disable=g-import-not-at-top
  try:
    config_lib.validate(cfg)
  except config_lib.ConfigError as e:
    fail(str(e))
  check_workdir(cfg)
  try:
    return Experiment(cfg)
  except (ValueError, FileNotFoundError) as e:
    fail(str(e))


def resolve(path: str):
  """A path from a flag: relative paths are taken from the repo root."""
  from score_jax.config import resolve_path  # pylint: disable=g-import-not-at-top
  return resolve_path(path)
