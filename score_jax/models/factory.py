"""The decoder class of a config: Gemma 1/2/3 (transformer.py) or Gemma 4 (gemma4.py)."""
from __future__ import annotations

from flax import nnx

from score_jax.models.config import ModelConfig
from score_jax.models.gemma4 import Gemma4Transformer
from score_jax.models.transformer import Transformer


def create_model(cfg: ModelConfig, *, rngs: nnx.Rngs) -> Transformer | Gemma4Transformer:
  """The decoder `cfg.architecture` names; both share one call interface."""
  cls = Gemma4Transformer if cfg.architecture == 'gemma4' else Transformer
  return cls(cfg, rngs=rngs)
