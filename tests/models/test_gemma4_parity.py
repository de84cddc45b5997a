"""Our Gemma 4 decoder against transformers' Gemma4ForCausalLM (float32, eager).

Three random tiny configs, one per feature family:
  dense: a distinct global head_dim (32 vs 16) and kv-head count (1 vs 2), k == v on
    global layers, proportional RoPE (a quarter of the global head dim rotated),
    final soft-cap, two scanned periods of (local, local, global);
  ple_shared: per-layer embeddings, the last 4 of 9 layers KV-shared with
    double-wide MLPs (ragged ends: unrolled layers before and after a scanned period);
  moe: 4 experts, top-2, beside the dense MLP.
Every norm scale, the layer scalars and the router scales are random, so each is
exercised. The batch mixes a full, a left-padded and a right-padded row, longer
than the sliding window. We compare logits at valid positions for the full
forward and for cached decoding (prefill, then one token at a time), and check
sensitivity: changing one feature moves our logits far beyond the tolerance.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.models import hf_convert
from score_jax.models.config import AttentionType, ModelConfig
from score_jax.models.gemma4 import Gemma4Transformer
# The batch (T=20 tokens, padded rows), the jitted forward and the cached decode
# are the Gemma 1-3 parity test's; init_cache there dispatches to Gemma 4's cache.
from tests.models.test_hf_parity import (ATOL, _batch, _cached_decode, _full_forward,
                                         _max_diff)

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

_L, _G = AttentionType.LOCAL_SLIDING, AttentionType.GLOBAL
_BASE = dict(architecture='gemma4', vocab_size=128, embed_dim=64, hidden_dim=96,
             num_heads=4, num_kv_heads=2, head_dim=16, sliding_window=8,
             rope_base_global=1_000_000.0, rope_fraction_global=0.25)
CONFIGS = {
    'dense': ModelConfig(name='g4_dense', num_layers=6, attention_pattern=(_L, _L, _G),
                         global_head_dim=32, num_global_kv_heads=1, attention_k_eq_v=True,
                         final_logit_softcap=30.0, **_BASE),
    'ple_shared': ModelConfig(name='g4_ple_shared', num_layers=9,
                              attention_pattern=(_L, _L, _G), per_layer_input_dim=8,
                              num_kv_shared_layers=4, use_double_wide_mlp=True,
                              global_head_dim=32, **_BASE),
    'moe': ModelConfig(name='g4_moe', num_layers=4, attention_pattern=(_L, _G),
                       num_experts=4, num_experts_per_token=2, expert_hidden_dim=32,
                       **_BASE),
}
# Input axes (after the stacked layers axis) of each weight, for a fan-in draw.
_FAN_IN = {'q_einsum': (1,), 'kv_einsum': (2,), 'k_einsum': (1,), 'attn_vec_einsum': (0, 1),
           'mlp/gating_einsum': (0,), 'mlp/linear': (0,), 'moe/gating_einsum': (2,),
           'moe/linear': (1,), 'router': (0,), 'per_layer_input_gate': (0,),
           'per_layer_projection': (0,)}


def make_random_gemma4(cfg: ModelConfig, seed: int = 1) -> Gemma4Transformer:
  """Our model with numpy-drawn weights: scales ~ 1 + N(0, 0.3^2), matrices LeCun."""
  model = nnx.eval_shape(lambda: Gemma4Transformer(cfg, rngs=nnx.Rngs(0)))
  state = nnx.state(model, nnx.Param)
  rng = np.random.RandomState(seed)

  def draw(path, x):
    names = [str(k.key) for k in path if str(k.key) != 'w']
    if x.ndim <= 2 and names[-1] in ('scale', 'router_scale', 'per_expert_scale',
                                     'layer_scalar'):
      return jnp.asarray(1.0 + 0.3 * rng.randn(*x.shape), x.dtype)
    stacked = names[0].startswith('layers_')
    key = next((k for k in _FAN_IN if k in '/'.join(names)), None)
    if names[-1] == 'per_layer_model_projection':
      std = x.shape[0] ** -0.5
    elif key is None:  # embedding tables
      std = 1.0
    else:
      std = np.prod([x.shape[a + stacked] for a in _FAN_IN[key]]) ** -0.5
    return jnp.asarray(std * rng.randn(*x.shape), x.dtype)

  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(draw, state.to_pure_dict()))
  nnx.update(model, state)
  return model


def hf_model(cfg, model):
  ref = transformers.Gemma4ForCausalLM(hf_convert.hf_config(cfg, attn_implementation='eager'))
  sd = hf_convert.params_to_hf_state_dict(cfg, model)
  missing, unexpected = ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()},
                                            strict=False)
  assert list(missing) == ['lm_head.weight'] and not unexpected, (missing, unexpected)
  return ref.eval()


def hf_logits(ref, tokens_BT, positions_BT, valid_BT):
  with torch.no_grad():
    out = ref(input_ids=torch.from_numpy(tokens_BT).long(),
              attention_mask=torch.from_numpy(valid_BT).long(),
              position_ids=torch.from_numpy(positions_BT).long(), use_cache=False)
  return out.logits.numpy()


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def case(request):
  cfg = CONFIGS[request.param]
  model = make_random_gemma4(cfg)
  batch = _batch(cfg.vocab_size)
  ref = hf_model(cfg, model)
  return cfg, model, batch, ref, hf_logits(ref, *batch)


def test_full_forward_matches_hf(case):
  cfg, model, (tokens_BT, positions_BT, valid_BT), _, ref_BTV = case
  ours_BTV = _full_forward(*nnx.split(model), tokens_BT, positions_BT, valid_BT)
  diff = _max_diff(ours_BTV, ref_BTV, valid_BT)
  print(f'{cfg.name}: full forward max |logit diff| = {diff:.2e} '
        f'(max |logit| {np.abs(ref_BTV[valid_BT]).max():.1f})')
  assert diff <= ATOL


def test_cached_decode_matches_hf(case):
  cfg, model, (tokens_BT, positions_BT, valid_BT), _, ref_BTV = case
  diff = _max_diff(_cached_decode(model, tokens_BT, positions_BT, valid_BT), ref_BTV,
                   valid_BT)
  print(f'{cfg.name}: cached decode max |logit diff| = {diff:.2e}')
  assert diff <= ATOL


def _weight_mutations(cfg, pure):
  """Our params with one feature switched off (shape kept), by feature name."""
  def edit(fn):
    new = jax.tree.map(lambda a: a, pure)
    fn(new)
    return new

  def each_stack(fn):
    return lambda p: [fn(p[k]) for k in p if k.startswith('layers_')]

  muts = {'layer_scalar': edit(each_stack(
      lambda s: s.__setitem__('layer_scalar', jnp.ones_like(s['layer_scalar']))))}
  if cfg.per_layer_input_dim:
    muts['per_layer_inputs'] = edit(each_stack(lambda s: s.__setitem__(
        'per_layer_projection', jnp.zeros_like(s['per_layer_projection']))))
  if cfg.use_double_wide_mlp:
    def narrow(s):
      s['mlp'] = dict(s['mlp'], linear=s['mlp']['linear'].at[:, cfg.hidden_dim:].set(0))
    muts['double_wide_mlp'] = edit(lambda p: [narrow(p[k]) for k in p if k.endswith('_shared')])
  if cfg.num_experts:
    muts['moe'] = edit(each_stack(lambda s: s.__setitem__(
        'moe', dict(s['moe'], linear=jnp.zeros_like(s['moe']['linear'])))))
  return muts


def _config_mutations(cfg):
  muts = {'sliding_window': cfg.replace(sliding_window=cfg.sliding_window + 1),
          'rope_fraction_global': cfg.replace(rope_fraction_global=1.0),
          'rope_base_local': cfg.replace(rope_base_local=cfg.rope_base_global)}
  if cfg.final_logit_softcap:
    muts['final_logit_softcap'] = cfg.replace(final_logit_softcap=None)
  if cfg.num_experts:
    muts['num_experts_per_token'] = cfg.replace(num_experts_per_token=1)
  return muts


def test_batch_is_sensitive_to_every_feature(case):
  """Parity means something: switching one feature off in our model (config or
  weights) moves the logits by >> ATOL from the reference."""
  cfg, model, (tokens_BT, positions_BT, valid_BT), _, ref_BTV = case
  graphdef, state = nnx.split(model)
  runs = {f: (nnx.split(nnx.eval_shape(lambda c=c: Gemma4Transformer(c, rngs=nnx.Rngs(0))))[0],
              state) for f, c in _config_mutations(cfg).items()}
  for field, pure in _weight_mutations(cfg, nnx.state(model, nnx.Param).to_pure_dict()).items():
    mutated = jax.tree.map(lambda a: a, state)
    nnx.replace_by_pure_dict(mutated, pure)
    runs[field] = (graphdef, mutated)
  for field, (g, s) in runs.items():
    diff = _max_diff(_full_forward(g, s, tokens_BT, positions_BT, valid_BT), ref_BTV, valid_BT)
    print(f'{cfg.name}: {field} changed -> max |logit diff| {diff:.3g}')
    assert diff > 100 * ATOL, f'{cfg.name}: changing {field} moved logits by only {diff}'


def _hf_mutations(cfg, ref):
  """In-place edits of the reference, each undoing one feature we implement."""
  layers = ref.model.layers
  attns = [l.self_attn for l in layers]
  muts = {}

  def no_v_norm():
    for a in attns:
      if hasattr(a, 'v_norm'):
        a.v_norm = torch.nn.Identity()
  muts['v_norm'] = no_v_norm
  if cfg.attention_k_eq_v:
    def own_v():  # value from its own projection instead of the key's
      for a in attns:
        if a.use_alternative_attention:
          a.v_proj = torch.nn.Linear(a.k_proj.in_features, a.k_proj.out_features, bias=False)
    muts['attention_k_eq_v'] = own_v
  if cfg.num_kv_shared_layers:
    def no_sharing():  # shared layers compute K/V themselves, with the producer's weights
      types = ref.config.layer_types
      first = cfg.num_layers - cfg.num_kv_shared_layers
      for i in range(first, cfg.num_layers):
        prod = attns[max(j for j in range(first) if types[j] == types[i])]
        a = attns[i]
        a.is_kv_shared_layer, a.store_full_length_kv = False, False
        a.k_proj, a.v_proj, a.k_norm, a.v_norm = prod.k_proj, prod.v_proj, prod.k_norm, prod.v_norm
    muts['kv_sharing'] = no_sharing
  return muts


def test_reference_is_sensitive_to_what_we_match(case):
  """Undoing v-norm, k == v or KV sharing in the reference moves it >> ATOL from us."""
  cfg, model, (tokens_BT, positions_BT, valid_BT), _, _ = case
  ours_BTV = np.asarray(_full_forward(*nnx.split(model), tokens_BT, positions_BT, valid_BT))
  for field in _hf_mutations(cfg, hf_model(cfg, model)):
    ref = hf_model(cfg, model)  # fresh: mutations are in place
    _hf_mutations(cfg, ref)[field]()
    torch.manual_seed(0)
    diff = _max_diff(ours_BTV, hf_logits(ref, tokens_BT, positions_BT, valid_BT), valid_BT)
    print(f'{cfg.name}: reference without {field} -> max |logit diff| {diff:.3g}')
    assert diff > 100 * ATOL, f'{cfg.name}: undoing {field} moved logits by only {diff}'
