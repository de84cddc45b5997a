"""Runs untrusted Python (a program and its tests) in a contained subprocess.

Containment, strongest available first (`isolation_mode()` says which):

* 'root-namespaces' (we are root, e.g. in CI): `unshare` gives the run new
  network (no interfaces up: nothing, not even 127.0.0.1, is reachable), pid,
  mount, ipc and uts namespaces. `_sandbox_init.py` remounts everything
  read-only, mounts a fresh tmpfs on /tmp as the working directory and runs the
  candidate as uid/gid 65534 (nobody) with no capabilities and no_new_privs.
  RLIMIT_NPROC applies to that uid; note it is one budget for all runs that
  are live at the same time, since they share the uid.
* 'user-namespaces' (not root, unprivileged user namespaces allowed): the same,
  inside `unshare --user --map-root-user`, with every capability dropped
  before the candidate starts. RLIMIT_NPROC then counts per run.
* 'none' (no namespaces): resource limits, a private temporary directory, a
  process group and the nobody uid when root; network isolation and
  write-protection of the rest of the file system are NOT available then.

Each run: a fresh temporary directory, its own session and process group, the
resource limits (CPU seconds, address space, file size, processes, open files,
no core dumps), the group killed with SIGKILL at the wall-clock timeout (and,
with namespaces, everything in the pid namespace when its init exits), bounded
capture of stdout/stderr, and the directory removed afterwards.

Passing needs the tests to have run to the end. The launcher makes a random
nonce per run, writes it into a pipe and closes its end. `_sandbox_init.py`
reads it from that pipe only after `exec(tests)` returned, and writes
`passed <nonce>` to a second pipe whose contents the launcher compares. A
program that exits early (sys.exit, os._exit, a signal), or prints anything,
never produces that line: stdout is never looked at, the nonce is in no file,
argument or environment variable, and it is unknown before the run. Limits:
the program and the tests share one interpreter, so code written on purpose to
attack the harness (reading the pipe itself) could forge a pass; the sandbox
bounds what such code can do, not what it can claim.
"""
import dataclasses
import enum
import functools
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from typing import Optional

_INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     '_sandbox_init.py')
_UNSHARE = '/usr/bin/unshare'
_NS_FLAGS = ['--net', '--pid', '--mount', '--ipc', '--uts', '--fork',
             '--kill-child', '--mount-proc']
NOBODY = 65534
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE,
                  signal.SIGILL}


class Status(str, enum.Enum):
  """How a run ended. Only PASSED means the tests ran to the end and held."""
  PASSED = 'passed'
  FAILED = 'failed'  # A test assertion failed, or the program left early.
  TIMEOUT = 'timeout'  # Wall-clock or CPU limit.
  SYNTAX_ERROR = 'syntax_error'
  RUNTIME_ERROR = 'runtime_error'  # An exception other than AssertionError.
  KILLED = 'killed'  # Killed by a signal or for too much output.


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one run. Sizes in bytes."""
  timeout_s: float = 10.0
  memory_bytes: int = 2 << 30
  file_size_bytes: int = 16 << 20
  tmpfs_bytes: int = 64 << 20
  nproc: int = 64
  nofile: int = 256
  max_capture_bytes: int = 32 << 10  # Kept per stream, the rest dropped.
  max_output_bytes: int = 16 << 20  # Beyond this (both streams) the run dies.

  def __post_init__(self):
    if not self.timeout_s > 0:
      raise ValueError(f'Limits.timeout_s={self.timeout_s}; expected > 0')
    for name in ('memory_bytes', 'file_size_bytes', 'tmpfs_bytes', 'nproc',
                 'nofile', 'max_capture_bytes', 'max_output_bytes'):
      if getattr(self, name) <= 0:
        raise ValueError(f'Limits.{name}={getattr(self, name)}; expected > 0')


@dataclasses.dataclass(frozen=True)
class TestResult:
  """The verdict of one run, with truncated output for debugging."""
  status: Status
  detail: str
  stdout: str
  stderr: str
  returncode: Optional[int]
  duration_s: float

  __test__ = False  # Not a pytest class.

  @property
  def passed(self) -> bool:
    return self.status == Status.PASSED


class SandboxError(RuntimeError):
  """The sandbox itself could not be set up (not the candidate's fault)."""


def _stdlib_world_readable(python: str) -> bool:
  """Whether uid nobody can read `python`'s standard library (mode bits)."""
  if python == sys.executable:
    stdlib = sysconfig.get_paths()['stdlib']
  else:
    stdlib = subprocess.run(
        [python, '-I', '-c', 'import sysconfig; print(sysconfig.get_paths()'
         "['stdlib'])"], capture_output=True, text=True, check=True,
        timeout=60).stdout.strip()
  path = os.path.realpath(stdlib)
  while True:
    if not os.stat(path).st_mode & 0o005 == 0o005:
      return False
    if path == '/':
      return True
    path = os.path.dirname(path)


@functools.lru_cache(maxsize=None)
def isolation_mode() -> str:
  """'root-namespaces', 'user-namespaces' or 'none' (see the module doc)."""
  root = os.geteuid() == 0
  prefix = [_UNSHARE] + ([] if root else ['--user', '--map-root-user'])
  try:
    ok = subprocess.run(prefix + _NS_FLAGS + ['/bin/true'], timeout=30,
                        capture_output=True).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    ok = False
  if not ok:
    return 'none'
  return 'root-namespaces' if root else 'user-namespaces'


@functools.lru_cache(maxsize=None)
def sandbox_python() -> str:
  """The interpreter that runs candidates.

  $SCORE_JAX_SANDBOX_PYTHON if set; else this interpreter, unless we run as
  root and nobody cannot read its standard library (a pyenv build under /root),
  in which case the system's /usr/bin/python3.
  """
  python = os.environ.get('SCORE_JAX_SANDBOX_PYTHON')
  if python:
    return python
  if os.geteuid() != 0 or _stdlib_world_readable(sys.executable):
    return sys.executable
  for python in ('/usr/bin/python3', '/usr/local/bin/python3'):
    if os.path.exists(python) and _stdlib_world_readable(python):
      return python
  raise SandboxError(f'uid {NOBODY} cannot read the standard library of '
                     f'{sys.executable}; set SCORE_JAX_SANDBOX_PYTHON to an '
                     'interpreter it can read')


def _command(mode: str, limits: Limits, nonce_fd: int, result_fd: int):
  """The argv that starts `_sandbox_init.py` for `mode`."""
  args = dict(isolate='none' if mode == 'none' else 'ns',
              uid=NOBODY if mode != 'user-namespaces' and os.geteuid() == 0
              else -1, gid=NOBODY, nonce_fd=nonce_fd, result_fd=result_fd,
              cpu_s=int(limits.timeout_s) + 1,
              memory_bytes=limits.memory_bytes,
              file_size_bytes=limits.file_size_bytes,
              tmpfs_bytes=limits.tmpfs_bytes, nproc=limits.nproc,
              nofile=limits.nofile)
  argv = [sandbox_python(), '-I', '-S', _INIT] + [f'--{k}={v}'
                                           for k, v in args.items()]
  if mode == 'root-namespaces':
    return [_UNSHARE] + _NS_FLAGS + argv
  if mode == 'user-namespaces':
    return [_UNSHARE, '--user', '--map-root-user'] + _NS_FLAGS + argv
  return argv


def _has_exited(pid: int) -> bool:
  """Whether `pid` has exited, leaving it unreaped (its id stays reserved)."""
  return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT
                   ) is not None


def _kill_group(pgid: int):
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


class _Capture:
  """Reads stdout, stderr and the result pipe without blocking the child."""

  def __init__(self, fds, limits: Limits):
    self.open = {fd: name for fd, name in fds.items()}
    self.kept = {name: bytearray() for name in fds.values()}
    self.total = 0
    self.limits = limits

  def pump(self, timeout: float) -> None:
    """Reads what is ready within `timeout` seconds."""
    if not self.open:
      time.sleep(timeout)
      return
    ready, _, _ = select.select(list(self.open), [], [], max(timeout, 0))
    for fd in ready:
      chunk = os.read(fd, 1 << 16)
      name = self.open[fd]
      if not chunk:
        del self.open[fd]
        continue
      if name != 'result':
        self.total += len(chunk)
      room = (4096 if name == 'result' else self.limits.max_capture_bytes
              ) - len(self.kept[name])
      self.kept[name] += chunk[:max(room, 0)]

  def text(self, name: str) -> str:
    return self.kept[name].decode('utf-8', 'replace')


def _verdict(records, nonce, returncode, timed_out, flooded):
  """Status and detail from what the run reported and how it ended."""
  started = any(r.startswith('started') for r in records)
  if timed_out:
    return Status.TIMEOUT, 'wall-clock timeout'
  if flooded:
    return Status.KILLED, 'output limit exceeded'
  if returncode == 0 and f'passed {nonce}' in records:
    return Status.PASSED, ''
  for record in reversed(records):
    status, _, detail = record.partition(' ')
    if status in ('failed', 'syntax_error', 'runtime_error') and started:
      return Status(status), detail
  if not started:
    return None, 'the sandbox did not start'
  if returncode is not None and returncode > 128:
    sig = returncode - 128
    name = signal.Signals(sig).name if sig in signal.valid_signals() else sig
    if sig == signal.SIGXCPU:
      return Status.TIMEOUT, 'CPU time limit'
    if sig in _CRASH_SIGNALS:
      return Status.RUNTIME_ERROR, f'crashed with {name}'
    return Status.KILLED, f'killed by {name}'
  return Status.FAILED, f'exited with {returncode} before the tests ended'


def _write_sources(workdir: str, mode: str, program: str, tests: str):
  """Writes program.py and tests.py into `workdir`, readable by the runner."""
  for name, source in (('program.py', program), ('tests.py', tests)):
    with open(os.path.join(workdir, name), 'w', encoding='utf-8',
              errors='replace') as f:  # Lone surrogates become '?'.
      f.write(source)
  if mode == 'none' and os.geteuid() == 0:
    os.chown(workdir, NOBODY, NOBODY)


def _start(mode: str, limits: Limits, workdir: str, nonce_r: int,
           result_w: int) -> subprocess.Popen:
  """Starts `_sandbox_init.py` in its own session, stdout/stderr piped."""
  return subprocess.Popen(
      _command(mode, limits, nonce_r, result_w), cwd=workdir,
      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, pass_fds=(nonce_r, result_w),
      start_new_session=True)


def _watch(proc: subprocess.Popen, capture: _Capture, deadline: float,
           limits: Limits) -> tuple[bool, bool]:
  """Pumps `capture` until the run exits; (timed_out, flooded).

  After the exit, the pipes get at most 0.2 s more to reach end of file.
  Stops at the monotonic `deadline` (timed out) or when the
  output passes limits.max_output_bytes (flooded).
  """
  exited_at = None
  while True:
    now = time.monotonic()
    if _has_exited(proc.pid):
      exited_at = exited_at or now
      if not capture.open or now - exited_at > 0.2:
        return False, False
    elif now >= deadline:
      return True, False
    capture.pump(min(0.05, max(deadline - now, 0.001)))
    if capture.total > limits.max_output_bytes:
      return False, True


def _reap(proc: subprocess.Popen) -> int:
  """Kills the run's process group and reaps it; a signal N reads as 128 + N."""
  _kill_group(proc.pid)  # Before reaping, so the group id cannot be reused.
  returncode = proc.wait()
  if returncode < 0:
    returncode = 128 - returncode
  return returncode


def run_python(program: str, tests: str, limits: Limits = Limits()
               ) -> TestResult:
  """Runs `program` then `tests` (one namespace) in the sandbox.

  Args:
    program: Python source of the candidate.
    tests: Python source run after it; raising AssertionError means failed.
    limits: resource limits and the wall-clock timeout.

  Returns:
    A TestResult; `.passed` only when the tests ran to the end.

  Raises:
    SandboxError: the sandbox could not start (a set-up problem, not a verdict).
  """
  mode = isolation_mode()
  nonce = secrets.token_hex(16)
  workdir = tempfile.mkdtemp(prefix='score_jax_sandbox_')
  nonce_r, nonce_w = os.pipe()
  result_r, result_w = os.pipe()
  out_r = err_r = proc = None
  start = time.monotonic()
  try:
    _write_sources(workdir, mode, program, tests)
    os.write(nonce_w, nonce.encode())
    os.close(nonce_w)
    nonce_w = None
    proc = _start(mode, limits, workdir, nonce_r, result_w)
    for fd in (nonce_r, result_w):
      os.close(fd)
    nonce_r = result_w = None
    out_r, err_r = proc.stdout.fileno(), proc.stderr.fileno()
    capture = _Capture({out_r: 'stdout', err_r: 'stderr', result_r: 'result'},
                       limits)
    timed_out, flooded = _watch(proc, capture, start + limits.timeout_s,
                                limits)
    returncode = _reap(proc)
    records = capture.text('result').splitlines()
    status, detail = _verdict(records, nonce, returncode, timed_out, flooded)
    if status is None:
      raise SandboxError(f'{detail} ({mode}): {capture.text("stderr")[-2000:]}')
    return TestResult(status=status, detail=detail,
                      stdout=capture.text('stdout'),
                      stderr=capture.text('stderr'), returncode=returncode,
                      duration_s=time.monotonic() - start)
  finally:
    if proc is not None:
      if proc.returncode is None:
        _kill_group(proc.pid)
        proc.wait()
      proc.stdout.close()
      proc.stderr.close()
    for fd in (nonce_r, nonce_w, result_r, result_w):
      if fd is not None:
        os.close(fd)
    shutil.rmtree(workdir, ignore_errors=True)
