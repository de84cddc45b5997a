"""Tunix's sampler as a speed peer: two turns on a random Gemma 3 text model.

Run by a Python that has google-tunix (its own venv; this script imports only
tunix, jax, flax, numpy and the standard library, never score_jax), usually as a
subprocess of `launch/bench_sampler.py --peer --tunix_python=...`, which passes
the model's dimensions from launch/peers.py as --model (JSON, score_jax
ModelConfig field names). Tunix's own Gemma3 class is built with them, random
init, float32, and its `tunix.generate.sampler.Sampler` does the two turns the
way a Tunix user would: turn 1 samples M1 tokens after the P-token prompt; turn 2
re-prefills [prompt, y1, chunk] from scratch (the sampler keeps no cache across
calls) and samples M2 tokens. Temperature 1 with top_p=1 and no top-k (Tunix's
plain categorical path); max_prompt_length is the exact prompt length of each
turn (no padding to a power of two); one Sampler whose cache holds both turns.

Tunix's sampler takes strings only, so it gets the minimal tokenizer its
TokenizerAdapter accepts: a prompt is its token ids written in decimal and
split on spaces (`_IdsTokenizer`); no BOS is added, pad id 0 (prompt ids are
drawn from [3, vocab)), and the EOS id is -1, which can never be sampled, so no
row stops early and every row generates its full budget (checked on every
call). Encoding and decoding these strings is inside the timed calls, as a real
tokenizer would be, and costs far less than one. Tokens/s = B * (M1 + M2) /
wall seconds of both calls, prefills included; median of --repeats calls after
one warm-up call. One JSON line per batch size on stdout:

  /work/venvs/tunix/bin/python launch/peer_tunix.py --batch_sizes=1,8 \\
      --prompt_len=64 --chunk_len=24 --max_y1_tokens=64 --max_y2_tokens=64 \\
      --repeats=3 --model='{"num_layers": 6, "vocab_size": 8192, \\
      "embed_dim": 512, "hidden_dim": 2048, "num_heads": 8, "num_kv_heads": 2, \\
      "head_dim": 64, "query_pre_attn_scalar": 64, "sliding_window": 512, \\
      "rope_base_local": 10000, "rope_base_global": 1000000, \\
      "rope_scale_global": 1.0, "attention_pattern": [1, 1, 1, 1, 1, 0]}'
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# launch/peers.py imports MODEL_FIELDS from here without tunix: tunix is
# imported inside the functions that use it.

PAD_ID, EOS_ID = 0, -1
MODEL_FIELDS = ('num_layers', 'vocab_size', 'embed_dim', 'hidden_dim', 'num_heads',
                'num_kv_heads', 'head_dim', 'query_pre_attn_scalar', 'sliding_window',
                'rope_base_local', 'rope_base_global', 'rope_scale_global',
                'attention_pattern')
# score_jax's AttentionType values (0 global, 1 local sliding) of Gemma 3's pattern.
GEMMA3_PATTERN = [1, 1, 1, 1, 1, 0]


class _IdsTokenizer:
  """Token ids as decimal words: the least a Tunix Sampler needs to take ids."""

  def encode(self, text: str) -> list[int]:
    return [int(w) for w in text.split()]

  def decode(self, ids: list[int]) -> str:
    return ' '.join(map(str, ids))

  def bos_id(self) -> int:
    return 0    # falsy: Sampler.tokenize adds no BOS

  def eos_id(self) -> int:
    return EOS_ID

  def pad_id(self) -> int:
    return PAD_ID


def tunix_config(model: dict):
  """Tunix's Gemma 3 ModelConfig for score_jax ModelConfig fields; exits on a mismatch."""
  from tunix.models.gemma3 import model as gemma3_lib  # pylint: disable=g-import-not-at-top
  missing = [f for f in MODEL_FIELDS if f not in model]
  if missing:
    sys.exit(f'--model: missing fields {missing} (needs all of {list(MODEL_FIELDS)})')
  if list(model['attention_pattern']) != GEMMA3_PATTERN:
    sys.exit(f'--model: attention_pattern must be Gemma 3\'s {GEMMA3_PATTERN}, '
             f'got {model["attention_pattern"]}')
  norm = gemma3_lib.QueryPreAttentionNormalisation
  scalar = model['query_pre_attn_scalar'] or model['head_dim']
  by = {model['head_dim']: norm.BY_ONE_OVER_SQRT_HEAD_DIM,
        model['embed_dim'] // model['num_heads']:
            norm.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS}
  if scalar not in by:
    sys.exit(f'--model: query_pre_attn_scalar {scalar} must be head_dim or '
             'embed_dim // num_heads (the two Tunix supports)')
  return gemma3_lib.ModelConfig(
      num_layers=model['num_layers'], num_embed=model['vocab_size'],
      embed_dim=model['embed_dim'], hidden_dim=model['hidden_dim'],
      num_heads=model['num_heads'], head_dim=model['head_dim'],
      num_kv_heads=model['num_kv_heads'], sliding_window_size=model['sliding_window'],
      local_base_frequency=model['rope_base_local'],
      global_base_frequency=model['rope_base_global'],
      global_scale_factor=model['rope_scale_global'], query_pre_attn_norm=by[scalar],
      shd_config=gemma3_lib.ShardingConfig.get_default_sharding(is_sampling=True),
      param_dtype=jnp.float32)


def two_turns(sampler, prompts: list[str], chunk: str, lens: tuple, seed: int):
  """Turn 1 from the prompts, turn 2 re-prefilling [prompt, y1, chunk]."""
  p, m1, c, m2 = lens
  kw = dict(temperature=1.0, top_p=1.0, top_k=None, eos_tokens=[EOS_ID])
  out1 = sampler(prompts, max_generation_steps=m1, max_prompt_length=p, seed=seed, **kw)
  prompts2 = [f'{x} {" ".join(map(str, y1.tolist()))} {chunk}'
              for x, y1 in zip(prompts, out1.tokens)]
  out2 = sampler(prompts2, max_generation_steps=m2, max_prompt_length=p + m1 + c,
                 seed=seed + 1, **kw)
  got = [len(t) for t in out1.tokens] + [len(t) for t in out2.tokens]
  want = [m1] * len(prompts) + [m2] * len(prompts)
  if got != want:    # tokens/s counts full budgets: they must all be spent
    sys.exit(f'Tunix generated {got} tokens per row, expected {want}')
  return out2


def bench(args, model: dict) -> None:
  """Prints one JSON line per batch size."""
  from tunix.generate import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from tunix.models.gemma3 import model as gemma3_lib  # pylint: disable=g-import-not-at-top
  cfg = tunix_config(model)
  transformer = gemma3_lib.Gemma3(cfg, rngs=nnx.Rngs(0))
  lens = (args.prompt_len, args.max_y1_tokens, args.chunk_len, args.max_y2_tokens)
  sampler = sampler_lib.Sampler(transformer, _IdsTokenizer(), sampler_lib.CacheConfig(
      cache_size=sum(lens), num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim))
  params = sum(x.size for x in jax.tree.leaves(nnx.state(transformer, nnx.Param)))
  rng = np.random.default_rng(0)
  chunk = ' '.join(map(str, rng.integers(3, cfg.num_embed, args.chunk_len)))
  for b in [int(x) for x in args.batch_sizes.split(',')]:
    ids = rng.integers(3, cfg.num_embed, (b, args.prompt_len))
    prompts = [' '.join(map(str, row)) for row in ids]
    two_turns(sampler, prompts, chunk, lens, seed=0)     # compiles both turns
    times = []
    for r in range(args.repeats):
      t0 = time.perf_counter()
      two_turns(sampler, prompts, chunk, lens, seed=2 * r + 2)
      times.append(time.perf_counter() - t0)
    n = b * (args.max_y1_tokens + args.max_y2_tokens)
    print(json.dumps(dict(
        batch=b, tunix_tok_s=n / statistics.median(times),
        tunix_tok_s_all=[n / t for t in times], tunix_params=int(params),
        tunix_version=importlib.metadata.version('google-tunix'),
        tunix_jax=jax.__version__)), flush=True)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--batch_sizes', default='1,8,32', help='Comma-separated.')
  ap.add_argument('--prompt_len', type=int, default=64)
  ap.add_argument('--chunk_len', type=int, default=24)
  ap.add_argument('--max_y1_tokens', type=int, default=64)
  ap.add_argument('--max_y2_tokens', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--model', required=True,
                  help='JSON of score_jax ModelConfig fields (see the docstring).')
  args = ap.parse_args(argv)
  try:
    model = json.loads(args.model)
  except json.JSONDecodeError as e:
    sys.exit(f'--model: not JSON ({e})')
  try:
    import tunix  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    sys.exit(f'{sys.executable} cannot import google-tunix ({e}): run this '
             'script with the Python of a venv that has it')
  bench(args, model)


if __name__ == '__main__':
  main()
