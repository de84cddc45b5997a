"""The small real-path configs (and a bandit task) shared by the training tests."""
import dataclasses

from score_jax.config import base_config
from score_jax.data import synthetic


def tiny_config(workdir):
  """1-digit additions, a 2-layer gemma3_tiny, 3-token turns: seconds per step on CPU.

  One length bucket (16,), so every batch (and every process's prompts) share a
  width; 4 samples per prompt. Callers set the split sizes, batch and evaluation.
  """
  c = base_config()
  c.workdir = str(workdir)
  c.model.preset = 'gemma3_tiny'
  c.model.overrides.num_layers = 2
  c.model.overrides.sliding_window = 64
  c.tokenizer.vocab_size = 48
  c.task.fields.digits = 1
  c.data.buckets = (16,)
  c.sampling.max_y1_tokens = 3
  c.sampling.max_y2_tokens = 3
  c.train.samples_per_prompt = 4
  c.train.log_every = 1
  c.checkpoint.every = 100
  return c


def run_config(workdir, **train):
  """tiny_config on 40 problems (15 held out), 4 prompts a step, synchronous saves.

  Evaluation: the 15 held-out problems in one batch, 200 bootstrap resamples.
  `train`: config.train fields (e.g. schedule=(('stage2', 3),)).
  """
  c = tiny_config(workdir)
  c.task.fields.num_train = 40
  c.task.fields.num_test = 15
  c.data.batch_size = 4
  c.checkpoint.async_save = False
  c.eval.num_problems = 15
  c.eval.batch_size = 16
  c.eval.bootstrap_resamples = 200
  for k, v in train.items():
    setattr(c.train, k, v)
  return c


@dataclasses.dataclass(frozen=True)
class LeadingDigitBandit(synthetic.SyntheticArithmeticTask):
  """A bandit: reward 1 when the response starts with '7', whatever the question."""
  name: str = 'leading_digit_bandit'

  def reward(self, example, response):
    return float(response.strip().startswith('7'))


def resume_config(workdir):
  """tiny_config on 40 problems, 4 steps (2 Stage I, 2 Stage II), a checkpoint every 2.

  Shared by the resume tests and their subprocesses (launcher config file, signal
  worker), so all of them train the same run.
  """
  c = tiny_config(workdir)
  c.task.fields.num_train = 40
  c.task.fields.num_test = 15
  c.data.batch_size = 4
  c.train.schedule = (('stage1', 2), ('stage2', 2))
  c.checkpoint.async_save = False
  c.checkpoint.every = 2
  return c
