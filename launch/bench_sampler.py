"""Sampler throughput: one turn, two turns with KV-cache reuse, two turns re-prefilled.

Randomly initialised models; no stop ids, so every row generates its full budget
and tokens/s = batch * generated tokens / wall seconds, prefills included (best
of --repeats steady calls; the first call of each shape compiles and is recorded
separately). The re-prefill baseline computes turn 2 the naive way: y1 comes back
to the host and [x, y1] is prefilled from scratch before the chunk and y2
(Sampler.rollout with a given y1). "Turn 2 alone" times only the second turn:
chunk + y2 into the cache left by y1, against prefill [x, y1] + chunk + y2 + pack.
Wall and process-CPU seconds are both recorded: on a shared CPU the wall clock
also counts waiting for a core.

  python launch/bench_sampler.py --presets=gemma3_tiny,gemma3_100m \\
      --batch_sizes=1,8,32 --max_y1_tokens=8 --max_y2_tokens=8 --out=runs/bench_sampler.json

--peer instead runs the issue's 27M Gemma 3 model (launch/peers.py) against
Hugging Face generate on the same weights in this process (two turns at
temperature 1, turn 2 continuing HF's cache) and this machine's plain-matmul
ceiling for decoding (peers.roofline); median and spread of --repeats calls.
With --tunix_python (a Python that has google-tunix, e.g. a venv made with
`python3 -m venv /work/venvs/tunix && /work/venvs/tunix/bin/pip install
google-tunix==0.1.7`), Tunix's sampler joins them: launch/peer_tunix.py runs
under that Python as one subprocess for all batch sizes, AFTER our and HF's
timings, on a Tunix Gemma 3 of the same dimensions (turn 2 re-prefills
[x, y1, chunk], as Tunix keeps no cache across calls); rows gain ratio_vs_tunix
and ratio_vs_best_peer (ours / the faster of HF and Tunix). If it fails, one
line says why and the rows go without Tunix:

  python launch/bench_sampler.py --peer --batch_sizes=1,8,32 --prompt_len=64 \\
      --chunk_len=24 --max_y1_tokens=64 --max_y2_tokens=64 --repeats=3 \\
      --tunix_python=/work/venvs/tunix/bin/python --out=runs/bench_sampler_peer.json
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as `python launch/bench_sampler.py` from anywhere
  sys.path.insert(0, _REPO)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from score_jax.models import Transformer, count_params, get_preset  # pylint: disable=g-import-not-at-top
from score_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top

_PRESETS = flags.DEFINE_list('presets', ['gemma3_tiny', 'gemma3_100m'], 'Model presets.')
_BATCH = flags.DEFINE_list('batch_sizes', ['1', '8', '32'], 'Batch sizes.')
_PROMPT = flags.DEFINE_integer('prompt_len', 32, 'Prompt bucket; rows hold 50-100% of it.')
_CHUNK = flags.DEFINE_integer('chunk_len', 16, 'Correction-chunk tokens.')
_Y1 = flags.DEFINE_integer('max_y1_tokens', 8, 'Turn-1 budget (always spent).')
_Y2 = flags.DEFINE_integer('max_y2_tokens', 8, 'Turn-2 budget (always spent).')
_TEMP = flags.DEFINE_float('temperature', 1.0, 'Sampling temperature.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed calls per measurement (best kept).')
_OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')
_PEER = flags.DEFINE_bool('peer', False, 'Compare with HF generate on the 27M model.')
_TUNIX = flags.DEFINE_string(
    'tunix_python', '', 'With --peer: a Python that has google-tunix (e.g. '
    '/work/venvs/tunix/bin/python) to time Tunix\'s sampler too; empty skips it.')


def _timed(fn, repeats, setup=lambda: ()):
  """(first call s, best steady wall s, best steady process-CPU s) of fn(*setup())."""
  def once():
    args = setup()
    jax.block_until_ready(args)
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, time.process_time() - c0
  first, _ = once()
  runs = [once() for _ in range(repeats)]
  return first, min(w for w, _ in runs), min(c for _, c in runs)


def _random_sampler(cfg):
  """(params, Sampler) of a randomly initialised model, with no stop ids."""
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  sampler = Sampler(graphdef, SamplingConfig(
      stop_ids=(), pad_id=0, temperature=_TEMP.value, max_y1_tokens=_Y1.value,
      max_y2_tokens=_Y2.value, prompt_buckets=(_PROMPT.value,)))
  return params, sampler


def _sampler_cases(sampler, params, ids, mask, chunk):
  """(name, fn, setup, generated tokens) of each timed measurement on one batch."""
  m1, m2, p = _Y1.value, _Y2.value, _PROMPT.value
  b = ids.shape[0]
  key = jax.random.key(0)

  def one_turn():
    return sampler.generate(params, ids, mask, key)

  def two_turns():
    return sampler.rollout(params, ids, mask, chunk, key)

  def y1_on_host():
    gen = sampler.generate(params, ids, mask, key)
    y1_ids, len_B = np.asarray(gen.tokens_BM), np.asarray(gen.len_B)
    return y1_ids, np.arange(m1)[None, :] < len_B[:, None]

  def turn2_reprefill(y1_ids, y1_mask):   # prefill [x, y1], chunk, y2, pack
    return sampler.rollout(params, ids, mask, chunk, key, y1_ids_BM=y1_ids,
                           y1_mask_BM=y1_mask)

  def two_turns_reprefill():
    return turn2_reprefill(*y1_on_host())

  def state_after_y1():
    state = sampler.prefill(params, ids, mask, num_slots=p + m1 + len(chunk) + m2)
    return (sampler.decode(params, state, key, p, m1)[0],)

  chunk_B = np.broadcast_to(np.asarray(chunk, np.int32), (b, len(chunk)))
  chunk_mask_B = np.ones(chunk_B.shape, bool)

  def turn2_cached(state):   # chunk and y2 into the donated cache
    state = sampler.extend(params, state, chunk_B, chunk_mask_B, p + m1,
                           merge_first=True)
    return sampler.decode(params, state, key, p + m1 + len(chunk), m2)

  return (('one_turn', one_turn, tuple, b * m1),
          ('two_turns_cached', two_turns, tuple, b * (m1 + m2)),
          ('two_turns_reprefill', two_turns_reprefill, tuple, b * (m1 + m2)),
          ('turn2_cached', turn2_cached, state_after_y1, b * m2),
          ('turn2_reprefill', turn2_reprefill, y1_on_host, b * m2))


def bench_preset(preset: str, batch_sizes: list[int]) -> list[dict]:
  """One row per batch size: tokens/s and seconds of each measurement on `preset`."""
  cfg = get_preset(preset)
  params, sampler = _random_sampler(cfg)
  p = _PROMPT.value
  rng = np.random.default_rng(0)
  chunk = rng.integers(3, cfg.vocab_size, _CHUNK.value).tolist()
  rows = []
  for b in batch_sizes:
    lengths = rng.integers(max(p // 2, 1), p + 1, b)
    ids = rng.integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
    mask = np.arange(p)[None, :] < lengths[:, None]
    row = dict(preset=preset, params=count_params(params), batch=b)
    for name, fn, setup, tokens in _sampler_cases(sampler, params, ids, mask, chunk):
      first, wall, cpu = _timed(fn, _REPEATS.value, setup)
      row[f'{name}_tok_s'] = tokens / wall
      row[f'{name}_s'] = wall
      row[f'{name}_cpu_s'] = cpu
      row[f'{name}_first_call_s'] = first
    rows.append(row)
    print(f"{preset:12s} B={b:3d}  one turn {row['one_turn_tok_s']:9.1f} tok/s | "
          f"two turns: cache reuse {row['two_turns_cached_tok_s']:9.1f} tok/s, "
          f"re-prefill {row['two_turns_reprefill_tok_s']:9.1f} tok/s | turn 2 alone: "
          f"{row['turn2_cached_s']:.3f} s vs {row['turn2_reprefill_s']:.3f} s", flush=True)
  return rows


def bench_peer(batch_sizes: list[int]) -> list[dict]:
  """Ours vs HF generate (and the matmul-chain ceiling) on the issue's 27M model."""
  import torch  # pylint: disable=g-import-not-at-top
  import peers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  cfg = get_preset(peers.PEER_BASE, **peers.PEER_OVERRIDES)
  params, sampler = _random_sampler(cfg)
  m1, m2, p, c, reps = _Y1.value, _Y2.value, _PROMPT.value, _CHUNK.value, _REPEATS.value
  hf = peers.hf_model(cfg, params)
  rng = np.random.default_rng(0)
  chunk = rng.integers(3, cfg.vocab_size, c)
  ceiling = peers.roofline(cfg, params, batch_sizes)
  print('roofline:', json.dumps({k: round(v, 1) for k, v in ceiling.items()}), flush=True)
  rows = []
  for b in batch_sizes:
    ids = rng.integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
    mask = np.ones((b, p), bool)
    key = jax.random.key(0)
    ours = lambda: jax.block_until_ready(sampler.rollout(params, ids, mask, chunk, key))
    state0 = sampler.prefill(params, ids, mask, num_slots=p + m1 + c + m2, score=False)

    def decode_only():   # m1 cached decode steps; the state is donated, so copy it
      state = jax.tree.map(jnp.copy, state0)
      jax.block_until_ready(sampler.decode(params, state, key, p, m1))

    theirs = lambda: peers.hf_two_turns(hf, ids, chunk, m1, m2)
    row = dict(batch=b, tokens=b * (m1 + m2))
    for name, fn in (('ours', ours), ('hf', theirs), ('ours_decode', decode_only)):
      med, times = peers.best_of(fn, reps)
      n = b * m1 if name == 'ours_decode' else b * (m1 + m2)
      row[f'{name}_tok_s'] = n / med
      row[f'{name}_tok_s_all'] = [n / t for t in times]
    row['ratio_vs_hf'] = row['ours_tok_s'] / row['hf_tok_s']
    row['decode_vs_ceiling'] = row['ours_decode_tok_s'] / ceiling[f'chain_tok_s_B{b}']
    rows.append(row)
    print(f"B={b:3d}  two turns: ours {row['ours_tok_s']:8.1f} tok/s, HF generate "
          f"{row['hf_tok_s']:8.1f} tok/s, ratio {row['ratio_vs_hf']:.2f} | decode "
          f"{row['ours_decode_tok_s']:8.1f} tok/s = {100 * row['decode_vs_ceiling']:.0f}% "
          f"of the matmul chain ({ceiling[f'chain_tok_s_B{b}']:.1f})", flush=True)
  if _TUNIX.value:
    _add_tunix(rows, peers.tunix_peer(_TUNIX.value, cfg, batch_sizes, (p, m1, c, m2), reps))
  return [dict(r, roofline=ceiling, params=count_params(params)) for r in rows]


def _add_tunix(rows: list[dict], tunix: dict) -> None:
  """Adds Tunix's tokens/s ({batch: peer_tunix row}) and our ratios to `rows`."""
  for row in rows:
    t = tunix.get(row['batch'])
    if t is None:
      continue
    row.update({k: v for k, v in t.items() if k != 'batch'})
    row['ratio_vs_tunix'] = row['ours_tok_s'] / t['tunix_tok_s']
    row['ratio_vs_best_peer'] = row['ours_tok_s'] / max(row['hf_tok_s'], t['tunix_tok_s'])
    print(f"B={row['batch']:3d}  two turns: ours {row['ours_tok_s']:8.1f} tok/s, Tunix "
          f"sampler {t['tunix_tok_s']:8.1f} tok/s (google-tunix {t['tunix_version']}), "
          f"ratio {row['ratio_vs_tunix']:.2f} | ours / best peer "
          f"{row['ratio_vs_best_peer']:.2f}", flush=True)


def main(argv):
  del argv
  if _TUNIX.value and not _PEER.value:
    sys.exit('--tunix_python: Tunix is a peer of --peer only; add --peer')
  if _PEER.value:
    rows = bench_peer([int(b) for b in _BATCH.value])
    _write(rows)
    return
  rows = []
  for preset in _PRESETS.value:
    rows += bench_preset(preset, [int(b) for b in _BATCH.value])
  print('\n| preset | params | B | one turn tok/s | two turns, cache reuse tok/s | '
        'two turns, re-prefill tok/s | turn 2 alone: reuse / re-prefill s (CPU s) |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['batch']} | "
          f"{r['one_turn_tok_s']:.1f} | {r['two_turns_cached_tok_s']:.1f} | "
          f"{r['two_turns_reprefill_tok_s']:.1f} | {r['turn2_cached_s']:.3f} / "
          f"{r['turn2_reprefill_s']:.3f} ({r['turn2_cached_cpu_s']:.3f} / "
          f"{r['turn2_reprefill_cpu_s']:.3f}) |")
  _write(rows)


def _write(rows):
  if _OUT.value:
    meta = dict(peer=_PEER.value, tunix_python=_TUNIX.value, device=str(jax.devices()[0]),
                device_count=jax.device_count(), jax=jax.__version__, machine=platform.machine(),
                prompt_len=_PROMPT.value, chunk_len=_CHUNK.value,
                max_y1_tokens=_Y1.value, max_y2_tokens=_Y2.value,
                temperature=_TEMP.value, repeats=_REPEATS.value,
                load_average=os.getloadavg(), cpu_count=os.cpu_count())
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      json.dump(dict(meta=meta, results=rows), f, indent=2)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
