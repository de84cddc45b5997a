"""Two JAX processes on this machine (4 CPU devices each) against one process (8).

Each worker (tests/training/multihost_worker.py) starts through launch/common.py
with --coordinator_address on 127.0.0.1, samples its own prompt rows with a
process-local copy of the weights, trains on the global batch over a mesh that
spans both processes, saves an Orbax checkpoint collectively after step 2 and
resumes from it in a fresh Experiment for step 3. The reference does the same
three steps on the same global data in this (8-device) process.
"""
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np

from tests.training import multihost_worker

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_S = 900   # a hang guard only: make test runs 2 test files at once on 2 cores


def _die_with_parent():
  """Linux: the kernel kills a worker whose parent (this test) dies first."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    import signal  # pylint: disable=g-import-not-at-top
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_workers(tmp_path):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO),
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  procs = []
  for pid in range(multihost_worker.NUM_WORKERS):
    log = open(tmp_path / f'worker{pid}.log', 'w')
    procs.append((subprocess.Popen(
        [sys.executable, str(REPO / 'tests' / 'training' / 'multihost_worker.py'),
         f'--coordinator_address=127.0.0.1:{port}',
         f'--num_processes={multihost_worker.NUM_WORKERS}', f'--process_id={pid}',
         f'--workdir={tmp_path / "multi"}', f'--out={tmp_path / "multi.npz"}'],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent), log))
  return procs


def _wait(procs, tmp_path, deadline):
  logs = lambda: '\n'.join(
      f'--- worker {i} ---\n' + (tmp_path / f'worker{i}.log').read_text()[-3000:]
      for i in range(len(procs)))
  try:
    for p, _ in procs:
      left = deadline - time.monotonic()
      try:
        rc = p.wait(timeout=max(left, 1))
      except subprocess.TimeoutExpired:
        raise AssertionError(f'workers timed out after {TIMEOUT_S}s\n{logs()}') from None
      assert rc == 0, f'worker exited with {rc}\n{logs()}'
  finally:
    for p, log in procs:   # a failed or hung worker must not outlive the test
      if p.poll() is None:
        p.kill()   # SIGKILL: a JAX worker may ignore SIGTERM
        p.wait()
      log.close()


def test_two_processes_match_one(tmp_path):
  deadline = time.monotonic() + TIMEOUT_S
  procs = _start_workers(tmp_path)
  try:
    ref = multihost_worker.reference(tmp_path / 'single')   # meanwhile, in this process
  finally:
    _wait(procs, tmp_path, deadline)
  multi = dict(np.load(tmp_path / 'multi.npz'))
  assert bool(multi.pop('tp_batch_ok'))
  assert multi.keys() == ref.keys()
  for key in sorted(ref):
    np.testing.assert_allclose(multi[key], ref[key], rtol=1e-5, atol=1e-5, err_msg=key)
  assert len(ref['history/loss']) == 3
  # Not vacuous: rewards vary, so every step moved the weights by its samples.
  assert (ref['history/grad_norm'] > 1e-3).all(), ref['history/grad_norm']
  assert 0 < ref['history/acc_t1'].mean() < 1, ref['history/acc_t1']
