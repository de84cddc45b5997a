"""config.lora through the real trainer on the tiny model: adapters trained,
checkpointed and merged; the base untouched; a merged export reloads exactly."""
import jax
import numpy as np
import pytest
from flax import nnx

import score_jax
from score_jax import config as config_lib
from score_jax.models import lora
from score_jax.models.checkpoints import load_params, save_safetensors
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from score_jax.training.checkpoint import Checkpointer, CheckpointConfig
from score_jax.training.experiment import Experiment
from score_jax.training import base_sft as base_sft_lib
from score_jax.training.build import trainable
from score_jax.training.trainer import train_score, train_sft
from tests.training.tiny_config import run_config


def _flat(state):
  return {'/'.join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def _exp(workdir):
  c = run_config(workdir, schedule=(('stage1', 1), ('stage2', 1)))
  c.task.fields.num_test = 8
  c.lora.rank = 2
  c.optim.learning_rate = 1e-2
  return Experiment(c)


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
  """(exp, base, result, the base's values before training): one 2-step LoRA run."""
  exp = _exp(tmp_path_factory.mktemp('lora'))
  base = exp.init_params(0)
  before = _flat(base)
  return exp, base, train_score(exp, base, base), before


def test_lora_score_trains_checkpoints_and_exports_adapters_only(lora_run, tmp_path):
  exp, base, result, before = lora_run
  assert result.steps == 2 and result.adapters is not None
  for k, v in _flat(base).items():   # the base is frozen
    np.testing.assert_array_equal(v, before[k])
  ad = _flat(result.adapters)
  assert ad and all(k.endswith(('/a', '/b')) for k in ad)
  assert any(np.abs(v).max() > 0 for k, v in ad.items() if k.endswith('/b'))
  scale = config_lib.lora_config(exp.cfg).scale
  merged = _flat(lora.merge(base, result.adapters, scale))
  for k, v in _flat(result.params).items():
    np.testing.assert_array_equal(v, merged[k])

  # The checkpoint holds the adapters (and their optimizer moments), not the base.
  train_init, _, _ = trainable(exp.cfg, base, base)
  tx = state_lib.make_optimizer(config_lib.optim_config(exp.cfg))
  shardings = state_lib.state_shardings(train_init, tx, exp.mesh, exp.strategy.rules)
  template = state_lib.init_train_state(train_init, tx, jax.random.key(0), shardings)
  ckpt = Checkpointer(CheckpointConfig(str(exp.workdir / 'score' / 'checkpoints'),
                                       async_save=False))
  state, _, meta = ckpt.restore(template)
  ckpt.close()
  assert meta['step'] == 2
  for k, v in _flat(state.params).items():
    np.testing.assert_array_equal(v, ad[k])
  # Read back with no optimizer (score_jax.load_trained): the adapters merged on the base.
  policy = _flat(result.params)
  for k, v in _flat(score_jax.load_trained(exp, base)).items():
    np.testing.assert_array_equal(v, policy[k])

  # Merged into the base, exported through the safetensors exporter, reloaded.
  path = save_safetensors(tmp_path / 'merged', exp.model_cfg, result.params)
  reloaded = load_params(path, exp.model_cfg)
  tokens = np.arange(1, 13, dtype=np.int32)[None] % exp.model_cfg.vocab_size
  logits = lambda p: np.asarray(step_lib.forward_logits(exp.graphdef, p, tokens,
                                                        np.ones_like(tokens, bool)))
  np.testing.assert_allclose(logits(reloaded), logits(result.params), atol=1e-4)


def test_lora_sft_returns_the_merged_policy_and_keeps_the_base(tmp_path):
  exp = _exp(tmp_path)
  base = exp.init_params(0)
  before = _flat(base)
  examples = exp.task.load_examples('train')[:16]
  traces, target = base_sft_lib.base_sft_data(exp, examples, seed=0, corrupt_fraction=0.5)
  params = train_sft(exp, base, traces, target, steps=2, batch_size=8, learning_rate=1e-2)
  after = _flat(params)
  for k, v in _flat(base).items():
    np.testing.assert_array_equal(v, before[k])
  changed = {k for k in after if not np.array_equal(after[k], before[k])}
  assert changed == {f'layers/{t}' for t in lora.TARGETS if f'layers/{t}' in before}


def test_lora_resume_after_a_stop_is_bit_exact(lora_run, tmp_path):
  # Reference: the same LoRA run without a stop (resume restores adapters + moments).
  _, base, straight, _ = lora_run
  first = train_score(_exp(tmp_path / 'b'), base, base, stop_after=1)   # then "killed"
  assert first.steps == 1
  resumed = train_score(_exp(tmp_path / 'b'), base, base)
  assert resumed.steps == 2
  assert ([h['prompts'] for h in first.history + resumed.history]
          == [h['prompts'] for h in straight.history])
  want = _flat(straight.adapters)
  got = _flat(resumed.adapters)
  assert got.keys() == want.keys()
  for k, v in got.items():
    np.testing.assert_array_equal(v, want[k])
