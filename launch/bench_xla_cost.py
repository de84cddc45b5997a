"""Compile-only, hardware-independent costs: XLA's bytes per decode step, flops per train step.

For each preset and batch size, one cached decode step (sample a token, run the
model on it against an S-slot KV cache, score it), compiled as the decode loop
runs it (each layer's weights as arrays of their own, see
Transformer.unstack_layers): XLA's `bytes accessed` against the bytes that must be
read, parameters + the live KV cache. And one Stage II train step (policy
forward + backward, reference forward, AdamW; remat 'none'; logits only at the
R = y1 + y2 positions; layers unrolled, as XLA's cost analysis counts a loop
body once): XLA's flops against model flops, counted as the matmuls
a step must do: 2 flops per weight per token for a forward (x3 with the
backward), attention's two T x T matmuls (4 B T^2 N H per layer forward, the
full square as computed), and the tied head at the R scored positions.
Nothing runs: shapes only, so gemma3_1b compiles on a laptop.

  python launch/bench_xla_cost.py --presets=gemma3_270m,gemma3_1b --batch_sizes=1,32 \\
      --out=runs/bench_xla_cost.json
"""
from __future__ import annotations

import functools
import json
import os
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

import peers  # pylint: disable=g-import-not-at-top
from score_jax import hlo, losses  # pylint: disable=g-import-not-at-top
from score_jax.batches import ScoreBatch  # pylint: disable=g-import-not-at-top
from score_jax.models import Transformer, get_preset  # pylint: disable=g-import-not-at-top
from score_jax.sampling import decode as dec  # pylint: disable=g-import-not-at-top
from score_jax.sampling import rules  # pylint: disable=g-import-not-at-top
from score_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
from score_jax.training.state import TrainState  # pylint: disable=g-import-not-at-top

_PRESETS = flags.DEFINE_list('presets', ['gemma3_270m', 'gemma3_1b'], 'Model presets.')
_BATCH = flags.DEFINE_list('batch_sizes', ['1', '32'], 'Decode batch sizes.')
_SLOTS = flags.DEFINE_integer('slots', 1024, 'KV-cache slots of the decode step (all live).')
_TRAIN = flags.DEFINE_list('train_shape', ['8', '512', '256'], 'Train step B, T, R.')
_OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')


def _cost(compiled) -> dict:
  c = compiled.cost_analysis()
  return c[0] if isinstance(c, (list, tuple)) else c


def decode_step_cost(cfg, b: int, s: int) -> dict:
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  layers = jax.eval_shape(lambda p: nnx.merge(graphdef, p).unstack_layers(), params)
  state = jax.eval_shape(lambda p: dec.init_state(graphdef, p, b, s), params)
  state = state.replace(valid_BS=jax.ShapeDtypeStruct((b, s), bool))

  def step(params, layers, state, key):   # the body of decode's while loop
    tok_B, _ = rules.sample(rules.row_keys(key, b), state.logits_BV, 1.0, None, None)
    return dec.extend(graphdef, params, state, tok_B[:, None], jnp.ones((b, 1), bool),
                      s - 1, layers=layers)

  compiled = jax.jit(step, donate_argnums=2).lower(
      params, layers, state, jax.ShapeDtypeStruct((), jax.random.key(0).dtype)).compile()
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  must = nbytes(params) + nbytes((state.cache.k_XSH, state.cache.v_XHS))
  got = _cost(compiled)['bytes accessed']
  return dict(bytes_accessed=got, params_plus_kv_bytes=must, ratio=got / must,
              weight_copies=len(hlo.weight_copies(compiled.as_text(), params)),
              **_decode_pieces(cfg, b))


def _decode_pieces(cfg, b: int) -> dict:
  """XLA's bytes for two pieces of the decode step compiled alone, to read its total by.

  The token lookup: for B > 1 XLA lowers it to a gather and charges the whole
  embedding table (a B = 1 lookup is a dynamic-slice, charged its one row), though
  only B rows are read. Sampling at temperature 1: jax.random.categorical draws one
  random number per vocabulary entry and row (Gumbel-max), which XLA counts as real
  traffic, several times the logits' own bytes.
  """
  emb = jax.ShapeDtypeStruct((cfg.vocab_size, cfg.embed_dim), cfg.jnp_param_dtype)
  tok = jax.ShapeDtypeStruct((b,), jnp.int32)
  logits = jax.ShapeDtypeStruct((b, cfg.vocab_size), jnp.float32)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  piece = lambda fn, *args: _cost(jax.jit(fn).lower(*args).compile())['bytes accessed']
  lookup = piece(lambda e, t: jnp.take(e, t, axis=0), emb, tok)
  sampling = piece(lambda k, l: rules.sample(rules.row_keys(k, b), l, 1.0, None, None)[0],
                   key, logits)
  return dict(lookup_bytes=lookup, lookup_rows_bytes=b * cfg.embed_dim * emb.dtype.itemsize,
              sampling_bytes=sampling, logits_bytes=b * cfg.vocab_size * 4)


def train_step_cost(cfg, b: int, t: int, r: int) -> dict:
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  tx = optax.adamw(1e-6)
  loss_cfg = losses.LossConfig(kl_estimator='k1', baseline='batch_mean')
  state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                     opt_state=jax.eval_shape(tx.init, params),
                     rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  mask, reward = jax.ShapeDtypeStruct((b, t), bool), jax.ShapeDtypeStruct((b,), jnp.float32)
  batch = ScoreBatch(jax.ShapeDtypeStruct((b, t), jnp.int32), mask, mask, mask, reward, reward)
  # train_step's body with all logits in one slice: XLA's cost analysis counts a
  # while loop's body once, so neither the layers nor the logit slices may loop.
  loss_fn = functools.partial(step_lib.score_loss, graphdef=graphdef, loss_cfg=loss_cfg,
                              stage='stage2', max_logits=1 << 62, response_len=r)

  def fn(state, ref_params, batch):
    grads, _ = jax.grad(loss_fn, has_aux=True)(state.params, ref_params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)

  lowered = jax.jit(fn, donate_argnums=0).lower(state, params, batch)
  compiled = lowered.compile()
  # Before the backend's passes (the program as written) and after them (XLA:CPU
  # leaves out the dots it hands to its matmul libraries, so this one runs low).
  got, want = _cost(lowered)['flops'], peers.model_flops(cfg, b, t, r)
  return dict(xla_flops=got, model_flops=want, ratio=got / want,
              compiled_xla_flops=_cost(compiled)['flops'],
              weight_copies=len(hlo.weight_copies(compiled.as_text(), params)))


def main(argv):
  del argv
  rows = []
  bt, tt, rt = (int(x) for x in _TRAIN.value)
  for preset in _PRESETS.value:
    cfg = get_preset(preset, remat='none', scan_layers=False)   # see train_step_cost
    for b in (int(x) for x in _BATCH.value):
      row = dict(preset=preset, program='decode_step', batch=b, slots=_SLOTS.value,
                 **decode_step_cost(cfg, b, _SLOTS.value))
      rows.append(row)
      print(f"{preset:12s} decode B={b:3d} S={_SLOTS.value}: bytes accessed "
            f"{row['bytes_accessed'] / 2**30:.3f} GiB vs params + KV "
            f"{row['params_plus_kv_bytes'] / 2**30:.3f} GiB = {row['ratio']:.2f}x; "
            f"weight copies {row['weight_copies']}; alone: token lookup "
            f"{row['lookup_bytes'] / 2**20:.1f} MiB (its {b} rows "
            f"{row['lookup_rows_bytes'] / 2**20:.3f} MiB), sampling "
            f"{row['sampling_bytes'] / 2**20:.1f} MiB (logits "
            f"{row['logits_bytes'] / 2**20:.1f} MiB)", flush=True)
    row = dict(preset=preset, program='stage2_step', batch=bt, length=tt, response_len=rt,
               **train_step_cost(cfg, bt, tt, rt))
    rows.append(row)
    print(f"{preset:12s} stage2 step {bt}x{tt} (R={rt}): XLA flops {row['xla_flops']:.3e} vs "
          f"model flops {row['model_flops']:.3e} = {row['ratio']:.2f}x; weight copies "
          f"{row['weight_copies']}", flush=True)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      json.dump(dict(meta=dict(jax=jax.__version__, backend=jax.default_backend()),
                     results=rows), f, indent=2)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
