"""Tiny random Gemma models of every generation, and their logits, for checkpoint tests.

Imported by the test modules beside it (pytest puts this folder on sys.path).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax.models import causal_mask, get_preset
from score_jax.models.checkpoints import common

CONFIGS = {
    'gemma_mqa': get_preset('gemma_tiny'),
    'gemma_mha': get_preset('gemma_tiny').replace(name='gemma_tiny_mha', num_kv_heads=4),
    'gemma2': get_preset('gemma2_tiny'),
    'gemma3': get_preset('gemma3_tiny'),
}
T = 12


def random_params(cfg, seed=0) -> nnx.State:
  """Params drawn with numpy (host arrays); every norm scale random so the
  1 + scale convention (and GGUF's stored +1) is exercised."""
  _, state = common.abstract_params(cfg)
  rng = np.random.RandomState(seed)

  def draw(x):
    std = 0.3 if len(x.shape) <= 2 else 0.15
    return (std * rng.randn(*x.shape)).astype(x.dtype)

  nnx.replace_by_pure_dict(state, jax.tree.map(draw, state.to_pure_dict()))
  return state


def tokens(cfg, seed=0):
  return np.random.RandomState(seed).randint(0, cfg.vocab_size, (2, T)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  graphdef, _ = common.abstract_params(cfg)

  @jax.jit
  def forward(pure, tokens_BT):
    _, state = common.abstract_params(cfg)
    nnx.replace_by_pure_dict(state, pure)
    model = nnx.merge(graphdef, state)
    pos_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    out, _ = model(tokens_BT, pos_BT, causal_mask(pos_BT, jnp.ones(tokens_BT.shape, bool)))
    return out.astype(jnp.float32)
  return forward


def logits(cfg, params, tokens_BT=None) -> np.ndarray:
  """Our model's float32 logits (B, T, V) for `tokens_BT`.

  The params are gathered to host first, so every call runs the same computation
  (one compile per config) whatever the params' sharding: a round trip that
  preserves the weights gives identical logits.
  """
  tokens_BT = tokens(cfg) if tokens_BT is None else tokens_BT
  pure = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), _pure(params))
  return np.asarray(_forward(cfg)(pure, jnp.asarray(tokens_BT)))


def _pure(params):
  if isinstance(params, nnx.State):
    return params.to_pure_dict()
  return params


def host(state) -> dict:
  return {k: np.asarray(v) for k, v in common.host_params(state).items()}
