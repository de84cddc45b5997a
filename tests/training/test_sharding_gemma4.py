"""Every sharding strategy on a tiny Gemma 4 (8 CPU devices) against one device.

The model has every Gemma 4 feature at once (distinct global head_dim and kv
heads, k == v, per-layer embeddings, KV sharing with double-wide MLPs, and 8
experts), so the expert-parallel strategy has experts to place. Same references
as tests/training/test_sharding.py: the program on a one-device mesh.
"""
import jax
import numpy as np
import pytest
from flax import nnx

from score_jax.models import create_model, get_preset
from score_jax.training import sharding as sh
from tests.training import test_sharding as base

STRATEGIES = sorted(sh.STRATEGIES)
RTOL = 5e-5
# Absolute error as a fraction of the leaf's largest update. The Stage II gradient
# with a leave-one-out baseline is a sum of terms whose advantages cancel, so float32
# sums taken in another order (batch split over devices) differ by up to 1.5e-4 of a
# leaf's largest update (seen: fsdp, layers_local layer_scalar, a sum over every
# token and channel; dp: per_layer_projection_norm 8.8e-5, a k == v k_einsum 6.3e-5).
# A sharding defect -- a shard's contribution lost, or counted twice -- moves an
# update by >= 1/8 (8 devices), three orders of magnitude above this.
UPDATE_TOL = 1e-3
# grad_norm is the norm of those same gradients: it inherits their noise (seen:
# fsdp_ep 5.4e-5 relative on a norm of 1349).
METRIC_RTOL = {'grad_norm': UPDATE_TOL}


@pytest.fixture(scope='module', autouse=True)
def _fast_compiles():
  """Same program on 1 and 8 devices, ~14 compiles on a busy 2-core CPU: skip XLA's
  optimisation passes (as tests/sampling does). Restored afterwards."""
  old = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', old)


@pytest.fixture(scope='module')
def model():
  # Every token goes to all 8 experts: a near-tie in top-k routing that float noise
  # flips between layouts would move a token's output by O(1) (sparse routing is
  # checked against transformers in tests/models/test_gemma4_parity.py).
  cfg = get_preset('gemma4_tiny', num_experts=8, num_experts_per_token=8,
                   expert_hidden_dim=32)
  graphdef, params = nnx.split(create_model(cfg, rngs=nnx.Rngs(0)))
  return cfg, graphdef, jax.tree.map(np.asarray, params)


@pytest.fixture(scope='module')
def reference(model):
  cache = {}

  def get(what):
    if what not in cache:
      cache[what] = (base._rollout(model, 'one_device')[0] if what == 'rollout'
                     else base._train_step(model, 'one_device', what))
    return cache[what]
  return get


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_train_step_matches_one_device(model, reference, strategy):
  ref_params, ref_metrics = reference('stage2')
  params, metrics = base._train_step(model, strategy, 'stage2')
  for k in metrics:
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=METRIC_RTOL.get(k, RTOL),
                               atol=1e-5, err_msg=k)
  for (path, a), b, h in zip(jax.tree_util.tree_leaves_with_path(params),
                             jax.tree.leaves(ref_params), jax.tree.leaves(model[2])):
    # lr-1 SGD: a - h is the gradient, here up to O(10) per leaf; its float32 sums
    # over differently split batches cancel, so the error scales with the leaf's
    # largest update, not with each entry.
    scale = float(np.abs(b - h).max())
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=max(1e-5, UPDATE_TOL * scale),
                               err_msg=jax.tree_util.keystr(path))
  moved = max(float(np.abs(a - h).max()) for a, h in
              zip(jax.tree.leaves(params), jax.tree.leaves(model[2])))
  assert moved > 1e-3


# The sampler's layouts: tensor-parallel heads and experts over devices.
@pytest.mark.parametrize('strategy', ['fsdp_tp', 'fsdp_ep'])
def test_rollout_matches_one_device(model, reference, strategy):
  trace, _ = base._rollout(model, strategy)
  ref = reference('rollout')
  np.testing.assert_array_equal(trace.tokens_BT, ref.tokens_BT)
  np.testing.assert_allclose(trace.sample_logprob_BT, ref.sample_logprob_BT, atol=1e-5)


def test_expert_strategy_places_whole_experts_per_device(model):
  cfg, _, host_params = model
  mesh, rules = base._mesh('fsdp_ep')
  specs = sh.param_specs(host_params, rules, mesh)
  moe = specs['layers_local']['moe']
  # param_specs maps each Variable to its PartitionSpec (leaves are specs)
  assert moe['gating_einsum'] == jax.sharding.PartitionSpec(None, 'fsdp', None, None, None)
  assert moe['linear'] == jax.sharding.PartitionSpec(None, 'fsdp', None, None)
  # the dense MLP beside the experts stays FSDP over its embed dim
  assert 'fsdp' in specs['layers_local']['mlp']['linear']
