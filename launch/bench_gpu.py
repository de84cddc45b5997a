"""One command on a GPU: sampler tokens/s as % of the HBM roofline, train-step MFU.

gemma3_1b in bfloat16 (random weights). Sampler: Sampler.rollout, two turns of
--tokens new tokens each from --prompt_len-token prompts; the roofline is
B tokens per (parameter bytes + live KV bytes) / HBM bandwidth per decode step.
Train step: Stage II (policy forward + backward, reference forward, AdamW) at
B x T with y1/y2 = the last --tokens positions each; MFU = model flops
(launch/peers.model_flops) / step time / the chip's peak bfloat16 flops.
HBM bandwidth and peak flops come from a table of known chips (--hbm_gbs /
--peak_tflops override); the measured copy bandwidth is printed beside them.
--tiny runs a tiny preset on CPU in a minute, to check the script itself.

  python launch/bench_gpu.py --out=runs/bench_gpu.json
  python launch/bench_gpu.py --tiny        # smoke test anywhere
"""
from __future__ import annotations

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
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

import peers  # pylint: disable=g-import-not-at-top
from score_jax.models import Transformer, get_preset  # pylint: disable=g-import-not-at-top
from score_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top

_TINY = flags.DEFINE_bool('tiny', False, 'gemma3_tiny, small shapes: a CPU smoke test.')
_BATCH = flags.DEFINE_list('batch_sizes', ['1', '32', '128'], 'Sampler batch sizes.')
_PROMPT = flags.DEFINE_integer('prompt_len', 256, 'Prompt tokens.')
_TOKENS = flags.DEFINE_integer('tokens', 256, 'New tokens per turn (and y1/y2 length).')
_TRAIN = flags.DEFINE_list('train_shape', ['16', '1024'], 'Train step B, T.')
_HBM = flags.DEFINE_float('hbm_gbs', None, 'HBM GB/s (default: known chips).')
_PEAK = flags.DEFINE_float('peak_tflops', None, 'Peak bf16 TFLOP/s (default: known chips).')
_OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')

# device_kind substring -> (HBM GB/s, dense bf16 TFLOP/s), from the vendors' sheets.
CHIPS = {'H200': (4800, 989), 'H100': (3350, 989), 'A100': (2039, 312),
         'L4': (300, 121), 'TPU v5 lite': (819, 197), 'TPU v4': (1200, 275)}


def chip_limits() -> tuple[float, float]:
  kind = jax.devices()[0].device_kind
  hbm, peak = next((v for k, v in CHIPS.items() if k in kind), (None, None))
  hbm, peak = _HBM.value or hbm, _PEAK.value or peak
  if hbm is None or peak is None:
    raise SystemExit(f'bench_gpu: unknown device {kind!r}; pass --hbm_gbs and --peak_tflops')
  return hbm * 1e9, peak * 1e12


def main(argv):
  del argv
  tiny = _TINY.value
  cfg = get_preset('gemma3_tiny' if tiny else 'gemma3_1b', dtype='bfloat16',
                   param_dtype='bfloat16')
  hbm, peak = (20e9, 1e11) if tiny else chip_limits()
  p, m = (16, 8) if tiny else (_PROMPT.value, _TOKENS.value)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  big = jnp.ones((64 << 20,), jnp.float32)
  t_cp, _ = peers.best_of(lambda: (big * 1.0001).block_until_ready(), 3)
  out = dict(device=jax.devices()[0].device_kind, hbm_gbs=hbm / 1e9,
             peak_tflops=peak / 1e12, measured_copy_gbs=2 * big.nbytes / t_cp / 1e9, rows=[])
  print(json.dumps({k: v for k, v in out.items() if k != 'rows'}), flush=True)
  sampler = Sampler(graphdef, SamplingConfig(stop_ids=(), pad_id=0, temperature=1.0,
                                             max_y1_tokens=m, max_y2_tokens=m,
                                             prompt_buckets=(p,)))
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  rng = np.random.default_rng(0)
  chunk = rng.integers(3, cfg.vocab_size, 24)
  kv_per_slot = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize
  for b in [2] if tiny else [int(x) for x in _BATCH.value]:
    ids = rng.integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
    run = lambda: jax.block_until_ready(sampler.rollout(
        params, ids, np.ones((b, p), bool), chunk, jax.random.key(0)))
    t, _ = peers.best_of(run, 2)
    tok_s = 2 * b * m / t
    mean_slots = p + m + 12 + m / 2     # average live slots over the two turns
    step_bytes = nbytes(params) + b * mean_slots * kv_per_slot
    roof = b * hbm / step_bytes
    out['rows'].append(dict(program='rollout', batch=b, tok_s=tok_s, roofline_tok_s=roof))
    print(f'sampler B={b:4d}: {tok_s:10.1f} tok/s = {100 * tok_s / roof:5.1f}% of the HBM '
          f'roofline ({roof:.0f} tok/s; prefills included)', flush=True)
  bt, tt = (2, 64) if tiny else (int(x) for x in _TRAIN.value)
  layout = [tt - 2 * (m + 12), m, 24, m] if not tiny else [24, 16, 8, 16]
  batch = peers.make_batch(bt, layout, cfg.vocab_size)
  t, _, _ = peers.time_stage2_step(cfg, params, batch, layout[1] + layout[3], 3)
  flops = peers.model_flops(cfg, bt, sum(layout), layout[1] + layout[3])
  out['rows'].append(dict(program='stage2_step', batch=bt, length=sum(layout), step_s=t,
                          mfu=flops / t / peak))
  print(f'stage2 step {bt}x{sum(layout)}: {t:.3f} s, {bt * sum(layout) / t:.0f} tok/s, '
        f'MFU {100 * flops / t / peak:.1f}%', flush=True)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      json.dump(out, f, indent=2)


if __name__ == '__main__':
  app.run(main)
