"""Stage II train step: ours against the same step in PyTorch on the transformers model.

One random Gemma 3 model of 27M parameters (launch/peers.py), the same weights on
both sides. A step is: policy forward + backward, frozen reference forward, k1 KL
on the y1 and y2 tokens, REINFORCE with Stage II's shaped reward, AdamW. Batch
B x T = 8 x 256 laid out as [x: 104 | y1: 64 | p: 24 | y2: 64]. Ours scores only
the y1/y2 positions (response_len = 128). Prints tokens/s of both (median and
spread of --repeats steps), the ratio, and how many weight-sized copies
(score_jax.hlo) the compiled step holds.

  python launch/bench_train_step.py --repeats=5 --out=runs/bench_train_step.json
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
from flax import nnx  # pylint: disable=g-import-not-at-top

import peers  # pylint: disable=g-import-not-at-top
from score_jax.models import Transformer, get_preset  # pylint: disable=g-import-not-at-top

_B = flags.DEFINE_integer('batch', 8, 'Rows per step.')
_LAYOUT = flags.DEFINE_list('layout', ['104', '64', '24', '64'], 'x, y1, p, y2 lengths.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed steps per side.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch step.')
_OUT = flags.DEFINE_string('out', None, 'Write the results as JSON here.')


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  cfg = get_preset(peers.PEER_BASE, **peers.PEER_OVERRIDES)
  _, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  layout = [int(x) for x in _LAYOUT.value]
  batch = peers.make_batch(_B.value, layout, cfg.vocab_size)
  n_tok = batch.tokens_BT.size
  rows = {}
  for name, r_len in (('ours', layout[1] + layout[3]), ('ours_all_positions', None)):
    med, times, copies = peers.time_stage2_step(cfg, params, batch, r_len, _REPEATS.value)
    rows[name] = dict(tok_s=n_tok / med, tok_s_all=[n_tok / t for t in times],
                      weight_copies=len(copies),
                      weight_copy_ops=sorted({i.opcode for i in copies}))
    print(f'{name:20s} {n_tok / med:8.1f} tok/s (steps {", ".join(f"{t:.2f}" for t in times)}'
          f' s); weight-sized copies in its HLO: {len(copies)}', flush=True)
  if _TORCH.value:
    step = peers.torch_stage2_step(peers.hf_model(cfg, params), batch.tokens_BT,
                                   batch.y1_mask_BT, batch.y2_mask_BT, batch.r1_B,
                                   batch.r2_B, peers.STAGE2_BETA, peers.STAGE2_ALPHA)
    med, times = peers.best_of(step, _REPEATS.value)
    rows['torch'] = dict(tok_s=n_tok / med, tok_s_all=[n_tok / t for t in times])
    print(f'{"torch":20s} {n_tok / med:8.1f} tok/s (steps '
          f'{", ".join(f"{t:.2f}" for t in times)} s)')
    rows['ratio_vs_torch'] = rows['ours']['tok_s'] / rows['torch']['tok_s']
    print(f"ours / torch: {rows['ratio_vs_torch']:.2f}")
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      json.dump(dict(meta=dict(batch=_B.value, layout=layout, jax=jax.__version__,
                               load_average=os.getloadavg(), cpu_count=os.cpu_count()),
                     results=rows), f, indent=2)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
