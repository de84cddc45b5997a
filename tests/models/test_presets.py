"""Presets against the published Gemma parameter counts, and parameter metadata.

Shapes only (nnx.eval_shape): no full-size model is materialised.
"""
import jax
import pytest
from flax import nnx

from score_jax.models import PRESETS, count_params, create_model, get_preset, hf_convert

# Published parameter counts; the output head is tied to the embedding, so the
# embedding is counted once.
M = 1e6
PUBLISHED = {
    # Gemma 1: "Gemma: Open Models Based on Gemini Research and Technology" (2024),
    # Table 2, embedding + non-embedding parameters (vocab 256,128 there, 256,000 here).
    'gemma_2b': 524 * M + 1_981 * M,           # 2.51B
    'gemma_7b': 786 * M + 7_751 * M,           # 8.54B
    # Gemma 2: "Gemma 2: Improving Open Language Models at a Practical Size" (2024),
    # Table 2, embedding + non-embedding.
    'gemma2_2b': 590 * M + 2_024 * M,          # 2.61B
    'gemma2_9b': 918 * M + 8_324 * M,          # 9.24B
    'gemma2_27b': 1_180 * M + 26_047 * M,      # 27.2B
    # Gemma 3: Gemma 3 Technical Report (2025), Table 1, embedding + non-embedding
    # (the text decoder; the 417M SigLIP encoder of 4B/12B/27B is not ours).
    # 270M: Google's announcement, "170M embedding + 100M transformer blocks".
    'gemma3_270m': 170 * M + 100 * M,          # 268M
    'gemma3_1b': 302 * M + 698 * M,            # 1.0B
    'gemma3_4b': 675 * M + 3_209 * M,          # 3.88B
    'gemma3_12b': 1_012 * M + 10_759 * M,      # 11.77B
    'gemma3_27b': 1_416 * M + 25_600 * M,      # 27.0B
    # Gemma 4 model cards (google/gemma-4-*): 26B A4B "25.2B total parameters", 31B
    # "30.7B" (ours: the text decoder; 25.23B and 30.70B).
    'gemma4_26b_a4b': 25_200 * M,
    'gemma4_31b': 30_700 * M,
}
# E2B/E4B: the model cards (google/gemma-4-E2B, -E4B, table "Gemma 4 family") give
# "2.3B effective (5.1B with embeddings)" and "4.5B effective (8B with embeddings)", and a
# "~150M" vision and "~300M" audio encoder for each. "With embeddings" is the whole
# checkpoint: our text decoder, those encoders, and the K/V projections and k-norms it
# stores for its KV-shared layers, which no layer reads (transformers drops them on load:
# Gemma4TextModel._keys_to_ignore_on_load_unexpected). Without those, E4B is 1.2% short.
# "Effective" is that total less both embedding tables (token and per-layer): 4.51B for
# E4B, but 2.37B for E2B, 3% above its card, so the effective figures are not checked.
PUBLISHED_WITH_EMBEDDINGS = {'gemma4_e2b': 5_100 * M, 'gemma4_e4b': 8_000 * M}
CARD_ENCODERS = 150 * M + 300 * M
LOGICAL_AXES = {'layers', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp', 'vocab', 'expert',
                None}


def _abstract(cfg):
  return nnx.eval_shape(lambda: create_model(cfg, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
  count = count_params(nnx.state(_abstract(get_preset(name)), nnx.Param))
  published = PUBLISHED[name]
  assert abs(count - published) <= 0.01 * published, f'{name}: {count:,} vs {published:,.0f}'


def _stored_kv_of_shared_layers(model) -> int:
  """What the checkpoint keeps for each KV-shared layer: the K/V projections and
  k-norm of one non-shared layer of its kind (the same shapes)."""
  state = nnx.state(model, nnx.Param)
  total = 0
  for kind in ('local', 'global'):
    if f'layers_{kind}_shared' not in state:
      continue
    kv = [x for name, sub in state[f'layers_{kind}']['attn'].items()
          for x in jax.tree.leaves(sub) if name.startswith(('k', 'v'))]
    per_layer = sum(x.size for x in kv) // kv[0].shape[0]
    total += per_layer * state[f'layers_{kind}_shared']['layer_scalar'].value.shape[0]
  return total


@pytest.mark.parametrize('name', sorted(PUBLISHED_WITH_EMBEDDINGS))
def test_checkpoint_count_matches_published(name):
  model = _abstract(get_preset(name))
  count = count_params(nnx.state(model, nnx.Param)) + _stored_kv_of_shared_layers(model)
  published = PUBLISHED_WITH_EMBEDDINGS[name] - CARD_ENCODERS
  assert abs(count - published) <= 0.01 * published, f'{name}: {count:,} vs {published:,.0f}'


@pytest.mark.parametrize('name', ['gemma4_e2b', 'gemma4_e4b', 'gemma4_26b_a4b', 'gemma4_31b'])
def test_gemma4_count_equals_transformers(name):
  """Exactly the parameters of transformers' Gemma4ForCausalLM of the same config
  (built on the meta device; its tied lm_head counted once)."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  cfg = get_preset(name)
  with torch.device('meta'):
    ref = transformers.Gemma4ForCausalLM(hf_convert.hf_config(cfg))
  theirs = sum(p.numel() for p in ref.parameters())  # tied: counted once
  theirs += sum(b.numel() for n, b in ref.named_buffers() if n.endswith('layer_scalar'))
  assert count_params(nnx.state(_abstract(cfg), nnx.Param)) == theirs


def test_every_full_size_preset_has_a_published_count():
  full_size = {n for n in PRESETS if 'tiny' not in n and n != 'gemma3_100m'}
  assert full_size == set(PUBLISHED) | set(PUBLISHED_WITH_EMBEDDINGS)


def test_unknown_preset_error_lists_presets():
  with pytest.raises(ValueError, match='gemma_9000') as err:
    get_preset('gemma_9000')
  for name in PRESETS:
    assert name in str(err.value)


def test_unknown_override_is_rejected():
  with pytest.raises(ValueError, match='num_layer'):
    get_preset('gemma_tiny', num_layer=3)


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_every_param_has_logical_axes(name):
  cfg = get_preset(name)
  model = _abstract(cfg)
  checked = 0
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Param):
      continue
    axes = var.get_metadata().get('logical_axes')
    where = '/'.join(map(str, path))
    assert axes is not None, f'{where}: no logical_axes'
    assert len(axes) == var.value.ndim, f'{where}: axes {axes} for shape {var.value.shape}'
    assert set(axes) <= LOGICAL_AXES, f'{where}: unknown axis names in {axes}'
    if path[0] == 'layers':
      assert axes[0] == 'layers' and var.value.shape[0] == cfg.num_layers, where
    elif str(path[0]).startswith('layers_'):  # Gemma 4: one stack per layer kind
      assert axes[0] == 'layers' and var.value.shape[0] < cfg.num_layers, where
    else:
      assert 'layers' not in axes, where
    checked += 1
  assert checked == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
