"""A resume-test run in its own process that receives a signal mid-run.

  python -m tests.training.signal_worker WORKDIR SIGTERM 3

Trains tiny_config.resume_config with no checkpoint due before the end, and
sends itself the signal when step 3 is logged (so the signal lands mid-run at a
known step). Exits as train_score makes it: 0 after saving, on the signal.
"""
import os
import signal
import sys

from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_score
from tests.training.tiny_config import resume_config


def main(workdir: str, signame: str, at_step: int) -> None:
  cfg = resume_config(workdir)
  cfg.checkpoint.every = 100    # the only save before the end is the signal's
  exp = Experiment(cfg)
  base = exp.init_params(0)

  def on_log(step, _):
    if step == at_step:
      os.kill(os.getpid(), getattr(signal, signame))

  result = train_score(exp, base, base, on_log=on_log)
  print(f'finished all {result.steps} steps without stopping')


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
