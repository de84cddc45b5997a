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
