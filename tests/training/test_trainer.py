"""The online loop on the real path: sampler -> rewards -> jitted step -> checkpoints."""
import dataclasses

import jax
import numpy as np
import pytest

from score_jax.batches import ScoreBatch
from score_jax.training.attempts import TwoAttempts
from score_jax.training.experiment import Experiment
from score_jax.training.loop import stage_at
from score_jax.training.trainer import train_score
from tests.training.tiny_config import LeadingDigitBandit, run_config


def test_stage_at_walks_the_schedule():
  sched = [('stage1', 2), ('stage2', 3), ('stage1', 1)]
  assert [stage_at(sched, s) for s in range(7)] == (
      ['stage1'] * 2 + ['stage2'] * 3 + ['stage1', None])


def test_stage_two_raises_acc_t2_on_a_bandit(tmp_path):
  cfg = run_config(tmp_path, schedule=(('stage2', 30),))
  cfg.optim.learning_rate = 3e-2
  cfg.loss.beta1 = 0.0
  cfg.loss.alpha = 1.0
  cfg.sampling.temperature = 1.0
  exp = Experiment(cfg, task=LeadingDigitBandit(digits=1, num_train=40, num_test=15))
  base = exp.init_params(0)
  before = exp.evaluate(base, temperature=1.0, seed=1)
  result = train_score(exp, base, base)
  after = exp.evaluate(result.params, temperature=1.0, seed=1)
  early = np.mean([h['acc_t2'] for h in result.history[:5]])
  late = np.mean([h['acc_t2'] for h in result.history[-5:]])
  print(f'Acc@t2 before {before["acc_t2"]:.3f} after {after["acc_t2"]:.3f}; '
        f'training rollouts {early:.3f} -> {late:.3f}')
  assert after['acc_t2'] >= before['acc_t2'] + 0.3
  assert late > early + 0.3


def test_resume_is_exact(tmp_path):
  sched = (('stage1', 3), ('stage2', 3))
  straight_exp = Experiment(run_config(tmp_path / 'a', schedule=sched))
  base = straight_exp.init_params(0)
  straight = train_score(straight_exp, base, base)

  exp = Experiment(run_config(tmp_path / 'b', schedule=sched))
  first = train_score(exp, base, base, stop_after=3)     # then "killed"
  assert first.steps == 3
  resumed = train_score(Experiment(run_config(tmp_path / 'b', schedule=sched)), base, base)
  assert resumed.steps == 6
  order = [h['prompts'] for h in first.history + resumed.history]
  assert order == [h['prompts'] for h in straight.history]
  for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@dataclasses.dataclass(frozen=True)
class RecordingAttempts(TwoAttempts):
  """The real TwoAttempts; it also keeps each call's prompts, options and result."""
  calls: list = dataclasses.field(default_factory=list)

  def __call__(self, params, prompts, examples, key, **kw):
    at = super().__call__(params, prompts, examples, key, **kw)
    self.calls.append((prompts, kw, at))
    return at


class RecordingExperiment(Experiment):
  """The real Experiment, whose two attempts are recorded (`calls`)."""

  def __init__(self, *a, **kw):
    super().__init__(*a, **kw)
    self.calls = []

  def two_attempts(self, temperature):
    at = super().two_attempts(temperature)
    return RecordingAttempts(**{f.name: getattr(at, f.name)
                                for f in dataclasses.fields(TwoAttempts)}, calls=self.calls)


def test_base_y1_rows_join_stage_two(tmp_path):
  """The paper's Stage II trick adds rows whose y1 the base (reference) model sampled.

  Greedy decoding and two different random models as policy and reference: the
  extra rows' y1 must be the reference's own greedy answer, not the policy's.
  """
  cfg = run_config(tmp_path, schedule=(('stage2', 1),), base_y1_fraction=0.5)
  cfg.sampling.temperature = 0.0
  exp = RecordingExperiment(cfg)
  policy, reference = exp.init_params(0), exp.init_params(1)
  hist = train_score(exp, policy, reference).history
  k, b = cfg.train.samples_per_prompt, cfg.data.batch_size
  assert [h['rows'] for h in hist] == [(b + b // 2) * k]
  extra = [(prompts, at) for prompts, kw, at in exp.calls if kw.get('y1_ids_BM') is not None]
  assert len(extra) == 1
  prompts, ro = extra[0]
  assert len(ro.y1_ids) == (b // 2) * k
  examples = exp.task.load_examples('train')
  greedy = lambda params: exp.two_attempts(0.0)(exp.for_sampling(params), prompts, examples,
                                                jax.random.key(0)).y1_ids
  assert ro.y1_ids == greedy(reference)
  assert ro.y1_ids != greedy(policy)   # the two models answer differently


def test_nan_guard_stops_with_a_clear_message(tmp_path):
  cfg = run_config(tmp_path, schedule=(('stage2', 4),))
  cfg.optim.learning_rate = 1e38     # the first update overflows the weights
  cfg.optim.grad_clip_norm = 0.0
  exp = Experiment(cfg)
  base = exp.init_params(0)
  with pytest.raises(FloatingPointError, match=r'stage2 step \d+: non-finite .*(loss|norm)'):
    train_score(exp, base, base)
  assert not list((tmp_path / 'score' / 'checkpoints' / 'latest').glob('[0-9]*'))


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
  """optax.MultiSteps over two half batches == one step on the whole batch."""
  from score_jax import losses
  from score_jax.training import state as state_lib
  from score_jax.training import step as step_lib
  exp = Experiment(run_config(tmp_path))
  params = exp.init_params(0)
  loss_cfg = losses.LossConfig(beta1=0.1, baseline='none', normalize='sequence')
  rng = np.random.default_rng(0)
  b, t = 16, 12   # halves of 8 rows: one per device of the 8-device dp mesh
  batch = {'tokens': rng.integers(0, 40, (b, t)).astype(np.int32),
           'valid': np.ones((b, t), bool),
           'y1_mask': np.zeros((b, t), bool), 'y2_mask': np.zeros((b, t), bool),
           'r1': rng.integers(0, 2, b).astype(np.float32),
           'r2': rng.integers(0, 2, b).astype(np.float32)}
  batch['y1_mask'][:, 3:6] = True
  batch['y2_mask'][:, 8:11] = True
  batch = ScoreBatch(batch['tokens'], batch['valid'], batch['y1_mask'], batch['y2_mask'],
                     batch['r1'], batch['r2'])
  halves = [jax.tree.map(lambda v: v[:8], batch), jax.tree.map(lambda v: v[8:], batch)]

  lr = 1e-2

  def run(accum, batches):
    tx = state_lib.make_optimizer(state_lib.OptimConfig(learning_rate=lr,
                                                        grad_accum_steps=accum))
    shard = state_lib.state_shardings(params, tx, exp.mesh, exp.strategy.rules)
    state = state_lib.init_train_state(params, tx, jax.random.key(0), shard)
    fn = step_lib.compile_step(exp.graphdef, tx, loss_cfg, 'stage2', exp.mesh,
                               exp.strategy.rules, shard, shard.params, batches[0])
    for bt in batches:
      state, _ = fn(state, params, bt)
    return state.params

  flat = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel()
                                      for x in jax.tree.leaves(tree)])
  before = flat(params)
  big = flat(run(1, [batch])) - before
  accumulated = flat(run(2, halves)) - before
  # Adam's first update is u = lr * g / (|g| + eps) per element (eps = 1e-8). The two
  # runs sum the same per-row gradients in different orders, so g differs by float32
  # rounding, dg <~ 1e-8 (unit roundoff 6e-8 on gradient sums <~ 0.1). That moves u
  # by lr * eps * dg / (|g| + eps)^2: at most 1e-5 = lr * 1e-3 once |g| >= 1e-6, but
  # by up to lr where g cancels to within rounding of 0 -- there one summation order
  # (one jax version's) is as right as another. So compare where |g| >= 1e-6, i.e.
  # |u| >= 0.99 lr, or where g is exactly 0 (tokens absent from the batch); that
  # must be nearly every weight. Dropping a micro-batch flips many updates (by 2 lr).
  determined = (np.abs(big) >= 0.99 * lr) | (big == 0)
  assert determined.mean() > 0.95, determined.mean()
  np.testing.assert_allclose(accumulated[determined], big[determined], rtol=1e-4,
                             atol=lr * 1e-3)
  # and the accumulated update really moved the weights
  assert np.abs(accumulated).max() > lr / 2
