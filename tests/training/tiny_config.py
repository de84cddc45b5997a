"""The small real-path config shared by the trainer tests and the multi-host worker."""
from score_jax.config import base_config


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
