"""Stopping a run cleanly on SIGTERM or SIGINT: finish the step, save it, exit 0.

Cloud TPU preemption sends SIGTERM and gives the job a short grace period; Ctrl-C
sends SIGINT. Inside `StopOnSignal` either one only sets a flag; the trainer
checks it after each step, saves a checkpoint at that step and raises
`Preempted` (a SystemExit with code 0), so a rerun of the same command resumes
with no step lost. A second signal acts at once, as it would without us.

Several processes: the signal may reach them at different steps, or only some of
them. Every step they agree (one all-gather of a flag: stop if any process was
signalled), so all save the same step and stop together.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
  """The run stopped on a signal after saving; exit code 0."""

  def __init__(self, message: str):
    super().__init__(0)
    self.message = message


class StopOnSignal:
  """Context manager turning SIGTERM / SIGINT into a stop request."""

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self) -> StopOnSignal:
    # Python delivers signals to the main thread only; elsewhere there is nothing to catch.
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> bool:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def requested(self) -> bool:
    """True when this process (or, with several, any process) was signalled."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    return bool(np.max(multihost_utils.process_allgather(np.int32(local))))
