"""Metrics out of a run: a JSONL file, TensorBoard event files, a progress bar, and
the NaN/Inf guard every step's metrics pass through (`finite_or_raise`).

A resumed run first rewinds both to its checkpoint's step, so each step is logged once.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any, Mapping

import jax
import numpy as np
import tqdm


def _scalar(v: Any) -> float | None:
  try:
    x = float(np.asarray(v))
  except (TypeError, ValueError):
    return None
  return x


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The float-valued metrics ('nan' and 'inf' strings, as JSON holds them, included)."""
  scalars = {k: _scalar(v) for k, v in metrics.items()}
  return {k: v for k, v in scalars.items() if v is not None}


def _summary_writer(tb_dir: pathlib.Path):
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(str(tb_dir))


class MetricsWriter:
  """Appends {'phase', 'step', metrics...} lines to metrics.jsonl and TensorBoard.

  Only process 0 writes; other processes hold a writer that does nothing.
  """

  def __init__(self, workdir: str | pathlib.Path):
    self.enabled = jax.process_index() == 0
    self.workdir = pathlib.Path(workdir)
    self.jsonl_path = self.workdir / 'metrics.jsonl'
    self.tb_dir = self.workdir / 'tensorboard'
    self._tb = None
    if self.enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      self._tb = _summary_writer(self.tb_dir)

  def write(self, phase: str, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = _scalars(metrics)
    line = {'phase': phase, 'step': int(step), 'time': time.time()}
    line.update({k: v for k, v in metrics.items() if isinstance(v, str)})
    line.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
    with self.jsonl_path.open('a') as f:
      f.write(json.dumps(line) + '\n')
    self._add_scalars(phase, step, scalars, line['time'])

  def _add_scalars(self, phase: str, step: int, scalars: Mapping[str, float],
                   walltime: float | None) -> None:
    for k, v in scalars.items():
      self._tb.add_scalar(f'{phase}/{k}', v, int(step), walltime=walltime)

  def rewind(self, phase: str, step: int) -> int:
    """Drops `phase`'s lines after `step`: a resumed run writes those steps again.

    metrics.jsonl is rewritten without them (a torn last line from a hard kill
    goes too); TensorBoard event files cannot be edited, so they are rebuilt
    from the kept lines, which hold the same scalars. Returns the lines dropped.
    """
    if not self.enabled or not self.jsonl_path.exists():
      return 0
    raw = [l for l in self.jsonl_path.read_text().splitlines() if l.strip()]
    lines = []
    for text in raw:
      try:
        lines.append(json.loads(text))
      except json.JSONDecodeError:
        continue
    keep = [l for l in lines if l.get('phase') != phase or int(l.get('step', 0)) <= step]
    if len(keep) == len(raw):
      return 0
    tmp = self.jsonl_path.with_name(self.jsonl_path.name + '.tmp')
    tmp.write_text(''.join(json.dumps(l) + '\n' for l in keep))
    os.replace(tmp, self.jsonl_path)
    self._tb.close()
    for f in self.tb_dir.glob('events.out.tfevents.*'):
      f.unlink()
    self._tb = _summary_writer(self.tb_dir)
    for l in keep:
      metrics = {k: v for k, v in l.items() if k not in ('phase', 'step', 'time')}
      self._add_scalars(l['phase'], l['step'], _scalars(metrics), l.get('time'))
    self._tb.flush()
    return len(raw) - len(keep)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def progress(total: int, desc: str, initial: int = 0) -> tqdm.tqdm:
  """A progress bar with step rate and ETA (tqdm's default format), process 0 only."""
  return tqdm.tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                   disable=jax.process_index() != 0, leave=True,
                   bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} '
                              '[{elapsed}<{remaining}, {rate_fmt}{postfix}]')


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def finite_or_raise(metrics: dict, phase: str, step: int) -> dict:
  """The NaN/Inf guard: host floats of the metrics, or a clear stop."""
  host = {k: float(np.asarray(v)) for k, v in metrics.items()}
  bad = sorted(k for k, v in host.items() if not np.isfinite(v))
  if bad:
    raise FloatingPointError(
        f'{phase} step {step}: non-finite {", ".join(f"{k}={host[k]}" for k in bad)}; '
        'stopping before the update is saved. Lower optim.learning_rate, tighten '
        'optim.grad_clip_norm, or use model.overrides.dtype=float32.')
  return host
