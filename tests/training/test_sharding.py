"""Sharding strategies on 8 CPU devices against one device, and FSDP's memory.

The reference for every strategy is the same program on a mesh of ONE device:
a correct layout changes where numbers live, never what they are. The train step
is compared with optax.sgd: Adam's first update is ~lr * sign(g) (m / sqrt(v)
with m, v from one gradient), so rounding noise in a near-zero gradient entry
flips or scales its update by up to 2 * lr; SGD's update is lr * g and keeps the
comparison to the gradients themselves.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from score_jax import losses
from score_jax.batches import ScoreBatch
from score_jax.models import Transformer, get_preset
from score_jax.sampling import Sampler, SamplingConfig
from score_jax.training import sharding as sh
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib

STRATEGIES = sorted(sh.STRATEGIES)
B, T, K = 8, 16, 4     # rows, trace length, samples per prompt
LR = 1.0               # sgd: updated params = params - grads


@pytest.fixture(scope='module')
def model():
  cfg = get_preset('gemma3_tiny', num_layers=2)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  return cfg, graphdef, jax.tree.map(np.asarray, params)


def _batch(vocab_size):
  rng = np.random.RandomState(0)
  lengths = rng.randint(11, T + 1, B)
  pos = np.arange(T)[None, :]
  valid = pos < lengths[:, None]
  return ScoreBatch(tokens_BT=rng.randint(1, vocab_size, (B, T)).astype(np.int32),
                    valid_BT=valid,
                    y1_mask_BT=np.broadcast_to((pos >= 4) & (pos < 8), (B, T)),
                    y2_mask_BT=(pos >= 10) & valid,
                    r1_B=rng.randint(0, 2, B).astype(np.float32),
                    r2_B=rng.randint(0, 2, B).astype(np.float32))


def _mesh(strategy):
  if strategy == 'one_device':
    return sh.make_mesh((1, 1, 1), jax.devices()[:1]), sh.STRATEGIES['dp'].rules
  s = sh.STRATEGIES[strategy]
  return sh.make_mesh(s.mesh_shape), s.rules


def _train_step(model, strategy, stage, constrain=False):
  cfg, graphdef, host_params = model
  mesh, rules = _mesh(strategy)
  params = jax.device_put(host_params, sh.param_shardings(host_params, rules, mesh))
  tx = optax.sgd(LR)
  shardings = state_lib.state_shardings(params, tx, mesh, rules)
  state = state_lib.init_train_state(params, tx, jax.random.key(0), shardings)
  batch = sh.host_local_batch_to_global(_batch(cfg.vocab_size), mesh, rules)
  act = sh.activation_sharding(mesh, rules, (B, T, cfg.embed_dim)) if constrain else None
  fn = step_lib.compile_step(graphdef, tx, losses.LossConfig(samples_per_prompt=K,
                                                             baseline='loo'),
                             stage, mesh, rules, shardings, shardings.params, batch,
                             activation_sharding=act)
  state, metrics = fn(state, params, batch)
  return jax.tree.map(np.asarray, state.params), jax.tree.map(float, metrics)


@pytest.fixture(scope='module')
def reference(model):
  """Results on one device, computed once per stage (or for the rollout)."""
  cache = {}

  def get(what):
    if what not in cache:
      cache[what] = (_rollout(model, 'one_device')[0] if what == 'rollout'
                     else _train_step(model, 'one_device', what))
    return cache[what]
  return get


CASES = [(s, stage, False) for s in STRATEGIES for stage in ('stage1', 'stage2')]
CASES += [('fsdp', 'stage1', True), ('fsdp_tp', 'stage2', True)]


@pytest.mark.parametrize('strategy, stage, constrain', CASES)
def test_train_step_matches_one_device(model, reference, strategy, stage, constrain):
  ref_params, ref_metrics = reference(stage)
  params, metrics = _train_step(model, strategy, stage, constrain)
  assert metrics.keys() == ref_metrics.keys()
  for k in metrics:
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5, atol=1e-5, err_msg=k)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))
  host = jax.tree.leaves(model[2])
  moved = max(float(np.abs(a - h).max()) for a, h in zip(jax.tree.leaves(params), host))
  assert moved > 1e-3   # the step did something, so the comparison is not vacuous


def _rollout(model, strategy):
  cfg, graphdef, host_params = model
  mesh, rules = _mesh(strategy)
  if strategy != 'one_device':
    rules = sh.STRATEGIES[strategy].sample_rules or rules
  params = sh.to_process_local(host_params, mesh, rules)   # what for_sampling does
  sampler = Sampler(graphdef, SamplingConfig(
      stop_ids=(1,), pad_id=0, temperature=1.0, max_y1_tokens=4, max_y2_tokens=4,
      prompt_buckets=(8,)))
  rng = np.random.RandomState(1)
  ids = rng.randint(2, cfg.vocab_size, (4, 8)).astype(np.int32)
  mask = np.arange(8)[None, :] < np.array([[8], [5], [3], [6]])
  trace = sampler.rollout(params, ids, mask, [1, 7, 9], jax.random.key(3))
  return jax.tree.map(np.asarray, trace), params


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_sampling_matches_one_device(model, reference, strategy):
  ref = reference('rollout')
  trace, params = _rollout(model, strategy)
  s = sh.STRATEGIES[strategy]
  if s.sample_rules is not None:   # the sampler's copy is laid out by sample_rules
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(params))
  np.testing.assert_array_equal(trace.tokens_BT, ref.tokens_BT)
  np.testing.assert_array_equal(trace.valid_BT, ref.valid_BT)
  np.testing.assert_allclose(trace.sample_logprob_BT, ref.sample_logprob_BT, atol=1e-5)


def _bytes(tree):
  return sum(x.nbytes for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('preset', ['gemma_tiny', 'gemma3_tiny'])
def test_fsdp_state_per_device_is_an_eighth(preset):
  """Params + AdamW moments per device <= 1.1 x (what the rules shard) / 8 + the rest.

  gemma_tiny: every parameter has an embed dimension (64, divisible by 8), so the
  replicated rest is only the optimizer's step counts. gemma3_tiny also has
  per-head-dim q/k norm scales (no embed axis), which FSDP leaves replicated.
  """
  cfg = get_preset(preset, num_layers=2)
  _, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  mesh, rules = _mesh('fsdp')
  tx = state_lib.make_optimizer(state_lib.OptimConfig())
  shardings = state_lib.state_shardings(params, tx, mesh, rules)
  params = jax.device_put(params, shardings.params)
  state = state_lib.init_train_state(params, tx, jax.random.key(0), shardings)
  tree = (state.params, state.opt_state)
  leaves = jax.tree.leaves(tree)
  total = _bytes(leaves)
  replicated = sum(x.nbytes for x in leaves if x.sharding.is_fully_replicated)
  per_device = sh.bytes_per_device(tree)
  assert len(per_device) == 8
  if preset == 'gemma_tiny':
    assert replicated < 1e-3 * total, (replicated, total)
  for device, nbytes in per_device.items():
    assert nbytes <= 1.1 * (total - replicated) / 8 + replicated, (device, nbytes, total)


def test_activation_sharding_is_applied_at_layer_boundaries(model):
  cfg, graphdef, host_params = model
  mesh, rules = _mesh('fsdp')
  act = sh.activation_sharding(mesh, rules, (B, T, cfg.embed_dim))
  assert act.spec == jax.sharding.PartitionSpec('fsdp', None, None)
  # 4 rows do not divide 8 devices: the batch stays replicated (no error).
  assert sh.activation_sharding(mesh, rules, (4, T, cfg.embed_dim)).spec == (
      jax.sharding.PartitionSpec(None, None, None))
  tokens = jnp.zeros((B, T), jnp.int32)
  valid = jnp.ones((B, T), bool)

  def text(a):
    f = functools.partial(step_lib.forward_logits, graphdef, activation_sharding=a)
    return jax.jit(f).lower(host_params, tokens, valid).as_text()

  count = lambda s: s.count('sharding_constraint') + s.count('@Sharding')
  assert count(text(None)) == 0
  assert count(text(act)) >= 2   # after the embedding, and in the scanned layer body


def test_mesh_shape_errors_name_the_fix():
  with pytest.raises(ValueError, match='not a multiple of 3.*config.mesh.shape'):
    sh.resolve_mesh_shape((1, -1, 3), 8)
  with pytest.raises(ValueError, match='uses 4 devices; 8 are available'):
    sh.resolve_mesh_shape((1, 2, 2), 8)
  with pytest.raises(ValueError, match='sizes must be positive'):
    sh.resolve_mesh_shape((0, -1, 1), 8)
  with pytest.raises(ValueError, match='at most one axis may be -1'):
    sh.resolve_mesh_shape((-1, -1, 1), 8)
  with pytest.raises(ValueError, match='config.mesh.strategy.*zigzag'):
    sh.get_strategy('zigzag')
  assert sh.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)


def test_single_process_helpers(model):
  cfg, _, host_params = model
  mesh, rules = _mesh('fsdp_tp')
  assert sh.process_mesh(mesh) is mesh
  local = sh.to_process_local(host_params, mesh, rules)
  assert sh.is_process_local(local)
  want = sh.param_shardings(host_params, rules, mesh)
  for x, s in zip(jax.tree.leaves(local), jax.tree.leaves(want)):
    assert x.sharding == s
  rows = {'a': np.arange(B * 3).reshape(B, 3)}
  g = sh.host_local_batch_to_global(rows, mesh, rules)['a']
  np.testing.assert_array_equal(np.asarray(g), rows['a'])
  assert g.sharding.spec[0] == ('data', 'fsdp')
  with pytest.raises(ValueError, match='6 rows per process.*4 ways'):
    sh.host_local_batch_to_global({'a': np.zeros((6, 3))}, mesh, rules)
  assert sh.global_mean(np.array([1.0, 2.0, 6.0])) == pytest.approx(3.0)
