"""Shared pieces of the speed benchmarks: peers (HF generate, a PyTorch Stage II
step), this machine's roofline, our timed Stage II step and its model flops.

Everything runs on the SAME random weights as our model (hf_convert maps them), in
the caller's process, so the benchmarks print side-by-side ratios. Tunix's sampler
is the exception: google-tunix brings its own jax and flax, so tunix_peer runs
launch/peer_tunix.py under another Python (a venv with google-tunix) on a Tunix
Gemma 3 of the same dimensions, randomly initialised by Tunix. The roofline
measures this machine: float32 matmul GFLOP/s, memory GB/s, and the tokens/s of
a jitted chain of plain matmuls over the model's weights (no attention, no
sampling): the ceiling for cached decoding.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import peer_tunix  # launch/, like this module
from score_jax import hlo, losses
from score_jax.batches import ScoreBatch
from score_jax.models import Transformer, hf_convert
from score_jax.models.config import ModelConfig
from score_jax.training import step as step_lib
from score_jax.training.state import TrainState

# The model: a random Gemma 3 text decoder of 27M parameters.
PEER_OVERRIDES = dict(num_layers=6, vocab_size=8192, embed_dim=512, hidden_dim=2048,
                      num_heads=8, num_kv_heads=2, head_dim=64, query_pre_attn_scalar=64)
PEER_BASE = 'gemma3_1b'
STAGE2_BETA, STAGE2_ALPHA = 0.01, 10.0


def best_of(fn, repeats: int) -> tuple[float, list[float]]:
  """(median wall seconds, all of them) of `repeats` calls after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), times


def parse_json_lines(text: str, key: str = 'batch') -> dict:
  """{row[key]: row} for the lines of `text` holding a JSON object with `key`;
  other lines (logs, warnings) are skipped."""
  rows = {}
  for line in text.splitlines():
    line = line.strip()
    if not line.startswith('{'):
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and key in row:
      rows[row[key]] = row
  return rows


def tunix_peer(python: str, cfg: ModelConfig, batch_sizes: list[int], lens: tuple,
               repeats: int) -> dict:
  """{batch: row} of Tunix's two-turn sampler, timed by launch/peer_tunix.py run
  under `python`; lens = (prompt, y1, chunk, y2) tokens. On any failure prints
  one line (the interpreter and its last stderr line) and returns {}."""
  p, m1, c, m2 = lens
  model = {f: getattr(cfg, f) for f in peer_tunix.MODEL_FIELDS}
  model['attention_pattern'] = [int(a) for a in cfg.attention_pattern]
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peer_tunix.py')
  cmd = [python, script, f'--batch_sizes={",".join(map(str, batch_sizes))}',
         f'--prompt_len={p}', f'--max_y1_tokens={m1}', f'--chunk_len={c}',
         f'--max_y2_tokens={m2}', f'--repeats={repeats}', f'--model={json.dumps(model)}']
  print(f'Tunix sampler: {python} {script} (all batch sizes, one process)...', flush=True)
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  except OSError as e:
    print(f'Tunix peer skipped: cannot run {python}: {e}', flush=True)
    return {}
  rows = parse_json_lines(proc.stdout)
  missing = sorted(set(batch_sizes) - set(rows))
  if proc.returncode or missing:
    last = (proc.stderr.strip().splitlines() or ['(no stderr)'])[-1]
    print(f'Tunix peer skipped: {python} {script} exited {proc.returncode} '
          f'(no row for B={missing}): {last}', flush=True)
    return {}
  return rows


def hf_model(cfg: ModelConfig, params):
  """The transformers model holding our params (eval mode, float32)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf_cfg = hf_convert.hf_config(cfg)
  cls = {'Gemma3TextConfig': transformers.Gemma3ForCausalLM,
         'Gemma2Config': transformers.Gemma2ForCausalLM,
         'GemmaConfig': transformers.GemmaForCausalLM}[type(hf_cfg).__name__]
  model = cls(hf_cfg)
  sd = {k: torch.from_numpy(np.asarray(v, np.float32))
        for k, v in hf_convert.params_to_hf_state_dict(cfg, params).items()}
  model.load_state_dict(sd, strict=False)
  model.tie_weights()
  return model.eval()


def hf_two_turns(model, prompt_BP: np.ndarray, chunk_C: np.ndarray, m1: int, m2: int):
  """HF generate, two turns at temperature 1 (no top-k), turn 2 continuing turn 1's cache."""
  import torch  # pylint: disable=g-import-not-at-top
  kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None,
            pad_token_id=0, return_dict_in_generate=True)
  x = torch.from_numpy(prompt_BP.astype(np.int64))
  with torch.inference_mode():
    out = model.generate(x, max_new_tokens=m1, min_new_tokens=m1, **kw)
    chunk = torch.from_numpy(np.broadcast_to(chunk_C, (x.shape[0], len(chunk_C))).copy())
    seq = torch.cat([out.sequences, chunk.to(out.sequences.dtype)], 1)
    out2 = model.generate(seq, past_key_values=out.past_key_values, max_new_tokens=m2,
                          min_new_tokens=m2, **kw)
  return out2.sequences


def torch_stage2_step(model, tokens_BT: np.ndarray, y1_BT: np.ndarray, y2_BT: np.ndarray,
                      r1_B: np.ndarray, r2_B: np.ndarray, beta: float, alpha: float):
  """A Stage II step in PyTorch: policy forward+backward, frozen reference forward,
  k1 KL on y1/y2 tokens, REINFORCE with shaped y2 reward, AdamW. Returns step()."""
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  ref = copy.deepcopy(model).eval().requires_grad_(False)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
  tok = torch.from_numpy(tokens_BT.astype(np.int64))
  m1, m2 = torch.from_numpy(y1_BT[:, 1:]), torch.from_numpy(y2_BT[:, 1:])
  r1, r2 = torch.from_numpy(r1_B), torch.from_numpy(r2_B)
  adv1 = r1 - r1.mean()
  r2s = r2 + alpha * (r2 - r1)
  adv2 = r2s - r2s.mean()

  def logp(m):
    logits = m(tok).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, tok[:, 1:, None])[..., 0]

  def step():
    with torch.no_grad():
      ref_lp = logp(ref)
    lp = logp(model)
    kl = lp - ref_lp
    loss = (-(lp * adv1[:, None] - beta * kl)[m1].sum()
            - (lp * adv2[:, None] - beta * kl)[m2].sum()) / tok.shape[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss)

  return step


def roofline(cfg: ModelConfig, params, batch_sizes, steps: int = 32, repeats: int = 3):
  """This machine's limits: matmul GFLOP/s, memory GB/s, matmul-chain tokens/s per B.

  The chain runs, per token and layer, the decode step's matmuls on the model's
  own weights as separate arrays (q, kv, attn_vec, gating, linear; stored (in,
  out), so each is one plain matmul) and the tied head: `steps` tokens in a row,
  each streaming the whole model, with no attention, norms or sampling.
  """
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  t_mm, _ = best_of(lambda: mm(a).block_until_ready(), repeats)
  big = jnp.ones((64 << 20,), jnp.float32)        # 256 MiB: read once, written once
  cp = jax.jit(lambda x: x * 1.0001)
  t_cp, _ = best_of(lambda: cp(big).block_until_ready(), repeats)
  out = dict(matmul_gflops=2 * n ** 3 / t_mm / 1e9, memory_gbs=2 * big.nbytes / t_cp / 1e9)
  d, f = cfg.embed_dim, cfg.hidden_dim
  lay = params['layers']
  attn = lay['attn']
  q = attn['qkv_einsum']['w'] if 'qkv_einsum' in attn else attn['q_einsum']['w']
  flat = lambda x, l: jnp.asarray(x[...][l]).reshape(d, -1)   # (D, out...) -> 2-D
  layers = [dict(q=flat(q, l), o=jnp.asarray(attn['attn_vec_einsum']['w'][...][l]).reshape(-1, d),
                 kv=(flat(attn['kv_einsum']['w'], l) if 'kv_einsum' in attn else None),
                 gate=flat(lay['mlp']['gating_einsum'], l),
                 down=jnp.asarray(lay['mlp']['linear'][...][l]))
            for l in range(cfg.num_layers)]
  emb_VD = jnp.asarray(params['embedder']['input_embedding'][...])

  def chain(x_BD, layers, emb_VD):
    def token(_, x_BD):
      for w in layers:
        q_BX = x_BD @ w['q']
        if w['kv'] is not None:
          q_BX = q_BX + jnp.sum(x_BD @ w['kv']) * 1e-9
        x_BD = x_BD + q_BX[:, :w['o'].shape[0]] @ w['o']
        x_BD = x_BD + (x_BD @ w['gate'])[:, :f] @ w['down']
      return x_BD + (x_BD @ emb_VD.T)[:, :d] * 1e-9
    return jax.lax.fori_loop(0, steps, token, x_BD)

  chain = jax.jit(chain)
  for b in batch_sizes:
    x = jnp.full((b, d), 1e-3, jnp.float32)
    t, _ = best_of(lambda: chain(x, layers, emb_VD).block_until_ready(), repeats)
    out[f'chain_tok_s_B{b}'] = b * steps / t
  return out


def make_batch(b: int, layout: list[int], vocab: int) -> dict:
  """A Stage II batch of b rows [x | y1 | p | y2] (layout: their lengths), all valid."""
  p, m1, c, m2 = layout
  t = p + m1 + c + m2
  rng = np.random.default_rng(0)
  pos = np.arange(t)[None, :]
  return ScoreBatch(tokens_BT=rng.integers(3, vocab, (b, t)).astype(np.int32),
                    valid_BT=np.ones((b, t), bool),
                    y1_mask_BT=np.broadcast_to((pos >= p) & (pos < p + m1), (b, t)).copy(),
                    y2_mask_BT=np.broadcast_to(pos >= p + m1 + c, (b, t)).copy(),
                    r1_B=rng.integers(0, 2, b).astype(np.float32),
                    r2_B=rng.integers(0, 2, b).astype(np.float32))


def time_stage2_step(cfg, params, batch, response_len, repeats):
  """(median s, all s, weight-sized copies in its HLO) of our jitted Stage II step
  (AdamW, k1 KL, batch-mean baseline) on `batch`; params are not consumed."""
  graphdef, _ = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  tx = optax.adamw(1e-6)
  loss_cfg = losses.LossConfig(beta1=STAGE2_BETA, alpha=STAGE2_ALPHA, kl_estimator='k1',
                               baseline='batch_mean')
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=graphdef, tx=tx,
                                   loss_cfg=loss_cfg, stage='stage2',
                                   response_len=response_len), donate_argnums=0)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=copy(params),
                     opt_state=tx.init(params), rng=jnp.zeros((2,), jnp.uint32))
  compiled = step.lower(state, params, batch).compile()
  copies = hlo.weight_copies(compiled.as_text(), params)
  box = [state]

  def run():
    box[0], metrics = compiled(box[0], params, batch)
    jax.block_until_ready(metrics)

  med, times = best_of(run, repeats)
  return med, times, copies


def model_flops(cfg, b: int, t: int, r: int) -> float:
  """Matmul flops a Stage II step must do (see the module docstring)."""
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_dim
  per_layer = d * (n + 2 * k) * h + n * h * d + 3 * d * f     # q, kv, attn_vec, gating, linear
  fwd = cfg.num_layers * (2 * per_layer * b * t + 4 * b * t * t * n * h)
  head = 2 * cfg.vocab_size * d * b * r
  return 3 * (fwd + head) + (fwd + head)      # policy forward + backward, reference forward
