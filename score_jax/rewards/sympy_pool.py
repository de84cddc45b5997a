"""A small pool of sympy worker processes whose every answer is time-bounded.

Signals cannot interrupt sympy while it is inside C code (big-integer powers,
factorials) and threads cannot be killed, so each comparison runs in a worker
subprocess (`_sympy_worker.py`). The caller waits for the answer only until its
deadline; a late worker is killed with SIGKILL and a fresh one is started in
its place at once, so the next caller rarely waits for sympy to import.

Workers are started on first use; that first start (importing sympy, about a
second) is waited for without counting against the deadline. Later waits for
a (re)starting worker do count. Each worker caps its own address space.
Workers exit when their stdin closes, i.e. when this process exits.
"""
import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from typing import Optional

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       '_sympy_worker.py')
FIRST_START_S = 120.0  # Waiting for the very first worker to import sympy.


class _Worker:
  """One worker subprocess and its unread output."""

  def __init__(self, memory_bytes: int):
    self.proc = subprocess.Popen(
        [sys.executable, '-I', _WORKER, str(memory_bytes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    self.buffer = b''
    self.ready = False

  def read_line(self, deadline: float) -> Optional[bytes]:
    """The next output line, or None at the deadline or at EOF."""
    fd = self.proc.stdout.fileno()
    while b'\n' not in self.buffer:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        return None
      chunk = os.read(fd, 1 << 16)
      if not chunk:
        return None
      self.buffer += chunk
    line, self.buffer = self.buffer.split(b'\n', 1)
    return line

  def wait_ready(self, deadline: float) -> bool:
    if not self.ready:
      self.ready = self.read_line(deadline) == b'ready'
    return self.ready

  def kill(self):
    try:
      self.proc.kill()
    except OSError:
      pass
    self.proc.wait()
    for stream in (self.proc.stdin, self.proc.stdout):
      stream.close()


class SympyPool:
  """Answers "are these two LaTeX answers equal?" within a deadline."""

  def __init__(self, num_workers: int = 2, memory_bytes: int = 2 << 30):
    if num_workers < 1:
      raise ValueError(f'SympyPool: num_workers={num_workers}; expected >= 1')
    self.num_workers = num_workers
    self.memory_bytes = memory_bytes
    self._idle: Optional[queue.Queue] = None
    self._lock = threading.Lock()
    self._started_once = threading.Event()
    self._workers: set = set()
    self._pid = os.getpid()

  def _spawn(self) -> _Worker:
    worker = _Worker(self.memory_bytes)
    with self._lock:
      self._workers.add(worker)
    return worker

  def _retire(self, worker: _Worker):
    with self._lock:
      self._workers.discard(worker)
    worker.kill()

  def _queue(self) -> queue.Queue:
    if self._pid != os.getpid():  # A forked child: the workers are not ours.
      self._lock = threading.Lock()
      self._idle, self._workers, self._pid = None, set(), os.getpid()
      self._started_once = threading.Event()
    with self._lock:
      if self._idle is None:
        self._idle = queue.Queue()
        atexit.register(self.close)
        spawn = True
      else:
        spawn = False
    if spawn:
      for _ in range(self.num_workers):
        self._idle.put(self._spawn())
    return self._idle

  @property
  def started(self) -> bool:
    """Whether a worker of this pool has ever been ready."""
    return self._pid == os.getpid() and self._started_once.is_set()

  def start(self):
    """Starts the workers; the first time, waits until one has imported sympy.

    Raises:
      RuntimeError: no worker became ready within FIRST_START_S seconds.
    """
    idle = self._queue()
    if self._started_once.is_set():
      return
    worker = idle.get(timeout=FIRST_START_S)
    ready = worker.wait_ready(time.monotonic() + FIRST_START_S)
    idle.put(worker)
    if not ready:
      raise RuntimeError(f'{_WORKER} did not start within {FIRST_START_S} s '
                         '(is sympy with latex2sympy2_extended installed?)')
    self._started_once.set()

  def equal(self, a: str, b: str, timeout_s: float) -> Optional[bool]:
    """Whether sympy finds a == b; None when it could not tell in time.

    Args:
      a: normalised LaTeX answer.
      b: normalised LaTeX answer.
      timeout_s: the most this call may take (after the pool's first start).
    """
    self.start()
    deadline = time.monotonic() + timeout_s
    idle = self._queue()
    try:
      worker = idle.get(timeout=max(deadline - time.monotonic(), 0))
    except queue.Empty:
      return None
    if not worker.wait_ready(deadline):
      if worker.proc.poll() is None:
        idle.put(worker)  # Still importing: keep it for the next caller.
      else:
        self._retire(worker)
        idle.put(self._spawn())
      return None
    request = json.dumps({'a': a, 'b': b}).encode() + b'\n'
    try:
      worker.proc.stdin.write(request)
      worker.proc.stdin.flush()
      line = worker.read_line(deadline)
    except (BrokenPipeError, OSError):
      line = None
    if line is None:  # Late or dead: replace it, never wait on it again.
      self._retire(worker)
      idle.put(self._spawn())
      return None
    idle.put(worker)
    return bool(json.loads(line)['equal'])

  def close(self):
    """Kills every worker; the pool starts new ones if used again."""
    with self._lock:
      workers, self._workers, self._idle = list(self._workers), set(), None
    for worker in workers:
      worker.kill()
