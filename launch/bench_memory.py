"""Compiled scratch memory of the sampler's prefill and a Stage II step: sliced vs whole logits.

  python launch/bench_memory.py --out=runs/bench_memory.json

For each preset in --presets this compiles (on abstract inputs, nothing is
materialised) the two programs whose logits grow as B x T x V:
- the sampler's prefill of --prefill_batch rows of --prefill_len tokens;
- a Stage II train step (exact KL, loss + grads + SGD update) over
  --step_batch packed traces of --step_len tokens, with --remat.
Each is compiled twice: with the default logits budget (MAX_LOGITS float32
elements per slice of positions) and with an unbounded one (one slice: every
position's logits at once, the way a plain forward computes them). It prints
XLA's memory_analysis() scratch ("temp") bytes of both and their ratio.
It also prints one cached decode step (--prefill_batch rows, --decode_slots
cache slots, cache donated): its scratch and XLA's cost-analysis bytes accessed.
"""
from __future__ import annotations

import functools
import json
import os
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as `python launch/bench_memory.py` from anywhere
  sys.path.insert(0, _REPO)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from score_jax import losses  # pylint: disable=g-import-not-at-top
from score_jax.batches import ScoreBatch  # pylint: disable=g-import-not-at-top
from score_jax.models import Transformer, get_preset  # pylint: disable=g-import-not-at-top
from score_jax.models.transformer import MAX_LOGITS  # pylint: disable=g-import-not-at-top
from score_jax.sampling import decode  # pylint: disable=g-import-not-at-top
from score_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

PRESETS = flags.DEFINE_list('presets', ['gemma3_270m', 'gemma3_1b'], 'Model presets.')
PREFILL_BATCH = flags.DEFINE_integer('prefill_batch', 32, 'Rows of the prefill.')
PREFILL_LEN = flags.DEFINE_integer('prefill_len', 512, 'Prompt tokens of the prefill.')
DECODE_SLOTS = flags.DEFINE_integer('decode_slots', 2048, 'KV cache slots of the decode step.')
STEP_BATCH = flags.DEFINE_integer('step_batch', 8, 'Packed traces per train step.')
STEP_LEN = flags.DEFINE_integer('step_len', 1024, 'Tokens per packed trace.')
REMAT = flags.DEFINE_string('remat', 'full', "The model's remat policy in the train step.")
OUT = flags.DEFINE_string('out', None, 'Write the results here as JSON.')

UNBOUNDED = 1 << 62


def _gib(compiled) -> float:
  return compiled.memory_analysis().temp_size_in_bytes / 2**30


def prefill_temp(cfg, max_logits: int) -> float:
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  b, t = PREFILL_BATCH.value, PREFILL_LEN.value

  prefill = functools.partial(decode.prefill, graphdef, num_slots=t, max_logits=max_logits)
  return _gib(jax.jit(prefill).lower(params, jax.ShapeDtypeStruct((b, t), jnp.int32),
                                     jax.ShapeDtypeStruct((b, t), jnp.bool_)).compile())


def step_temp(cfg, max_logits: int) -> float:
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  b, t = STEP_BATCH.value, STEP_LEN.value
  tx = optax.sgd(0.1)
  loss = functools.partial(step_lib.score_loss, graphdef=graphdef, stage='stage2',
                           loss_cfg=losses.LossConfig(kl_estimator='exact',
                                                     baseline='batch_mean'),
                           max_logits=max_logits)

  def step(params, ref_params, batch):
    grads, _ = jax.grad(loss, has_aux=True)(params, ref_params, batch)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)

  mask, reward = jax.ShapeDtypeStruct((b, t), jnp.bool_), jax.ShapeDtypeStruct((b,), jnp.float32)
  batch = ScoreBatch(jax.ShapeDtypeStruct((b, t), jnp.int32), mask, mask, mask, reward, reward)
  return _gib(jax.jit(step).lower(params, params, batch).compile())


def decode_step(cfg) -> dict:
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  b, s = PREFILL_BATCH.value, DECODE_SLOTS.value
  state = jax.eval_shape(lambda p: decode.init_state(graphdef, p, b, s), params)

  def step(params, state, tokens_B1, mask_B1):
    return decode.extend(graphdef, params, state, tokens_B1, mask_B1, s // 2)

  compiled = jax.jit(step, donate_argnums=1).lower(
      params, state, jax.ShapeDtypeStruct((b, 1), jnp.int32),
      jax.ShapeDtypeStruct((b, 1), jnp.bool_)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  cache = jax.tree.leaves(state.cache)
  return {'B': b, 'slots': s, 'cache_gib': sum(x.size * x.dtype.itemsize for x in cache) / 2**30,
          'temp_gib': _gib(compiled), 'bytes_accessed_gib': cost.get('bytes accessed', 0) / 2**30}


def main(argv):
  del argv
  rows = []
  for name in PRESETS.value:
    cfg = get_preset(name)
    for program, fn, shape, c in (
        ('prefill', prefill_temp, (PREFILL_BATCH.value, PREFILL_LEN.value), cfg),
        ('stage2 step', step_temp, (STEP_BATCH.value, STEP_LEN.value),
         cfg.replace(remat=REMAT.value))):
      whole_gib = shape[0] * shape[1] * cfg.vocab_size * 4 / 2**30
      sliced, unsliced = fn(c, MAX_LOGITS), fn(c, UNBOUNDED)
      rows.append({'preset': name, 'program': program, 'B': shape[0], 'T': shape[1],
                   'vocab': cfg.vocab_size, 'one_copy_of_logits_gib': whole_gib,
                   'temp_gib_sliced': sliced, 'temp_gib_unsliced': unsliced,
                   'ratio': unsliced / sliced})
      print(f'{name} {program}: scratch {unsliced:.2f} GiB -> {sliced:.2f} GiB '
            f'({unsliced / sliced:.1f}x less)', flush=True)
  print('\n| preset | program | B x T | vocab | one copy of logits GiB | scratch GiB, '
        'whole logits | scratch GiB, sliced | ratio |\n|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['preset']} | {r['program']} | {r['B']} x {r['T']} | {r['vocab']} | "
          f"{r['one_copy_of_logits_gib']:.1f} | {r['temp_gib_unsliced']:.2f} | "
          f"{r['temp_gib_sliced']:.2f} | {r['ratio']:.1f}x |")
  decode_rows = []
  print('\n| preset | decode step B x slots | KV cache GiB | scratch GiB | bytes accessed GiB |'
        '\n|---|---|---|---|---|')
  for name in PRESETS.value:
    r = dict(preset=name, **decode_step(get_preset(name)))
    decode_rows.append(r)
    print(f"| {name} | {r['B']} x {r['slots']} | {r['cache_gib']:.2f} | {r['temp_gib']:.3f} | "
          f"{r['bytes_accessed_gib']:.2f} |")
  if OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(OUT.value)), exist_ok=True)
    with open(OUT.value, 'w') as f:
      json.dump({'backend': jax.default_backend(), 'remat': REMAT.value, 'rows': rows,
                 'decode_step': decode_rows}, f, indent=1)
    print(f'\nwritten: {OUT.value}')


if __name__ == '__main__':
  app.run(main)
