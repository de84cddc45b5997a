"""SamplingConfig: the sampling rule, stop tokens, length budgets and prompt buckets."""
from __future__ import annotations

import dataclasses

from score_jax.sampling import rules


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the sampler draws and how long it may run.

  stop_ids: tokens that end a turn (eos, <end_of_turn>), kept in the output.
  pad_id: the id written where there is no token.
  temperature 0 is greedy (the paper's evaluation); training samples at 1.
  Prompts are right-padded up to the smallest bucket that holds their longest
  row, so batches whose lengths share a bucket reuse one compilation.
  """
  stop_ids: tuple[int, ...]
  pad_id: int
  prompt_buckets: tuple[int, ...]   # no default: a run's home is config.data.buckets
  temperature: float = 1.0
  top_k: int | None = None
  top_p: float | None = None
  max_y1_tokens: int = 256
  max_y2_tokens: int = 256

  def __post_init__(self):
    rules.check_rule(self.temperature, self.top_k, self.top_p)
    object.__setattr__(self, 'stop_ids', tuple(int(t) for t in self.stop_ids))
    object.__setattr__(self, 'prompt_buckets', tuple(int(b) for b in self.prompt_buckets))
    for name in ('max_y1_tokens', 'max_y2_tokens'):
      if getattr(self, name) < 1:
        raise ValueError(f'SamplingConfig: {name}={getattr(self, name)}; expected >= 1')
    b = self.prompt_buckets
    if not b or b[0] < 1 or list(b) != sorted(set(b)):
      raise ValueError(f'SamplingConfig: prompt_buckets={b}; expected increasing '
                       'positive lengths')

  def bucket(self, prompt_len: int) -> int:
    """The smallest prompt bucket >= prompt_len."""
    for b in self.prompt_buckets:
      if prompt_len <= b:
        return b
    raise ValueError(f'SamplingConfig: prompt of {prompt_len} tokens exceeds the '
                     f'largest prompt bucket {self.prompt_buckets[-1]}')

  def trace_len(self, chunk_len: int) -> int:
    """The static length of every CorrectionTrace: the largest bucket's episode."""
    return self.prompt_buckets[-1] + self.max_y1_tokens + chunk_len + self.max_y2_tokens
