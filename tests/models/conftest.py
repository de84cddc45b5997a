"""Shared helpers of the model tests: a random model without per-op XLA compiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.models import Transformer

# Input axes of each weight (after the leading layers axis), for a LeCun-normal draw.
_FAN_IN_AXES = {'input_embedding': (), 'q_einsum': (1,), 'kv_einsum': (1,),
                'qkv_einsum': (1,), 'attn_vec_einsum': (1, 2), 'gating_einsum': (1,),
                'linear': (1,)}


def make_random_model(cfg, seed: int = 1, qk_gain: float = 1.0) -> Transformer:
  """Our model holding numpy-drawn random weights; every norm scale ~ N(0, 0.3^2).

  Drawn with numpy on an abstract model: no per-op XLA compiles (fast on a busy
  CPU), and independent of our own initialisers. qk_gain scales the q/k weights.
  """
  model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  state = nnx.state(model, nnx.Param)
  rng = np.random.RandomState(seed)

  def draw(path, x):
    names = tuple(k.key for k in path)
    if names[-1] == 'scale':
      return jnp.asarray(0.3 * rng.randn(*x.shape), x.dtype)
    name = names[-2] if names[-1] == 'w' else names[-1]
    std = np.prod([x.shape[a] for a in _FAN_IN_AXES[name]]) ** -0.5
    if name in ('q_einsum', 'kv_einsum', 'qkv_einsum'):
      std *= qk_gain
    return jnp.asarray(std * rng.randn(*x.shape), x.dtype)

  nnx.replace_by_pure_dict(
      state, jax.tree_util.tree_map_with_path(draw, state.to_pure_dict()))
  nnx.update(model, state)
  return model


@pytest.fixture(scope='session')
def random_model():
  return make_random_model
