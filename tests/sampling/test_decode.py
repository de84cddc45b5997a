"""The compiled decode loop moves no weights and no KV cache: no per-step copies in its HLO.

Reference: XLA's own optimized HLO of the jitted decode (score_jax.hlo reads it).
A step that transposed or sliced a weight on every call would re-read and
re-write the whole model per token; the check below finds exactly those
instructions, and is shown to find one that a loop really makes.
"""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from score_jax import hlo
from score_jax.models import Transformer, get_preset
from score_jax.sampling import decode as dec


def _decode_hlo(cfg, batch: int, prompt: int, slots: int):
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  state = jax.eval_shape(lambda p: dec.prefill(
      graphdef, p, jnp.ones((batch, prompt), jnp.int32), jnp.ones((batch, prompt), bool),
      slots), params)

  def run(p, s, key):
    return dec.decode(graphdef, p, s, key, prompt, slots - prompt, temperature=1.0,
                      top_k=None, top_p=None, stop_ids=(1,), pad_id=0)

  text = jax.jit(run, donate_argnums=1).lower(params, state, jax.random.key(0)).compile()
  return text.as_text(), params


@pytest.mark.parametrize('name,overrides', [
    ('gemma3_tiny', {}),                      # grouped-query: q_einsum + kv_einsum
    ('gemma_tiny', {'num_kv_heads': 4}),      # multi-head: fused qkv_einsum
])
def test_decode_loop_copies_no_weight(name, overrides):
  cfg = get_preset(name, **overrides)
  text, params = _decode_hlo(cfg, batch=2, prompt=5, slots=11)
  assert hlo.loop_computations(text), 'expected a while loop in the decode HLO'
  copies = hlo.weight_copies(text, params, loops_only=True)
  assert not copies, '\n'.join(i.line[:160] for i in copies)


@pytest.mark.parametrize('batch,slots,overrides', [
    (2, 11, {}),                                            # 2 KV heads of 4
    # One KV head (as gemma3_270m/1b), sizes where XLA:CPU hands the attention
    # matmuls to its library: a cache in another layout was transposed here.
    (32, 512, {'num_kv_heads': 1, 'head_dim': 256, 'num_layers': 2}),
    # One row (B = 1, one KV head): XLA:CPU drops a unit row dim from the matmuls
    # and updated a 3-D cache twice (two fusions, copies to feed them).
    (1, 512, {'num_kv_heads': 1, 'head_dim': 256, 'num_layers': 2}),
])
def test_decode_loop_copies_no_kv_cache(batch, slots, overrides):
  """Each step writes its token into every layer's cache in place and the
  attention matmuls read the cache as stored: no instruction the loop runs
  copies, slices or transposes an array the size of one layer's cache or of all
  layers' keys (such a copy costs B x S x K x H per layer per token)."""
  cfg = get_preset('gemma3_tiny', **overrides)
  text, _ = _decode_hlo(cfg, batch=batch, prompt=5, slots=slots)
  layer = batch * slots * cfg.num_kv_heads * cfg.head_dim
  copies = hlo.copies_of_size(text, {layer, layer * cfg.num_layers}, loops_only=True)
  assert not copies, '\n'.join(i.line[:160] for i in copies)


def test_weight_copies_finds_a_per_step_transpose():
  """The detector sees a weight that a loop transposes on every iteration."""
  w_NDH = jnp.ones((4, 64, 16))

  def f(w_NDH, x_BD):
    step = lambda i, x_BD: jnp.einsum('BD,NDH->BNH', x_BD, w_NDH).reshape(x_BD.shape)
    return jax.lax.fori_loop(0, 3, step, x_BD)

  text = jax.jit(f).lower(w_NDH, jnp.ones((1, 64))).compile().as_text()
  copies = hlo.weight_copies(text, {'w': w_NDH}, loops_only=True)
  assert any(i.opcode in ('copy', 'transpose') for i in copies), text[:2000]
