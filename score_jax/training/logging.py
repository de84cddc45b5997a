"""Metrics out of a run: a JSONL file, TensorBoard event files, and a progress bar."""
from __future__ import annotations

import json
import math
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
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(self.tb_dir))

  def write(self, phase: str, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: _scalar(v) for k, v in metrics.items()}
    scalars = {k: v for k, v in scalars.items() if v is not None}
    line = {'phase': phase, 'step': int(step), 'time': time.time()}
    line.update({k: v for k, v in metrics.items() if isinstance(v, str)})
    line.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
    with self.jsonl_path.open('a') as f:
      f.write(json.dumps(line) + '\n')
    for k, v in scalars.items():
      self._tb.add_scalar(f'{phase}/{k}', v, int(step))

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
