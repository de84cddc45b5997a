"""The SCoRe loop on parts assembled by hand: a user's reward, data and update.

The loop (training/loop.py) must run only on its parts: these tests build them
without build.py, from a sampler, a reward callable, a plain iterator and a
compiled step, and forbid every Experiment method while the loop runs.
"""
import dataclasses

import jax
import numpy as np
import pytest

from score_jax import config as config_lib
from score_jax.batches import PromptBatch
from score_jax.training import loop as loop_lib
from score_jax.training import sharding as sh
from score_jax.training import state as state_lib
from score_jax.training import step as step_lib
from score_jax.training.attempts import TwoAttempts
from score_jax.training.checkpoint import Checkpointer, CheckpointConfig
from score_jax.training.experiment import Experiment
from score_jax.training.metric_log import MetricsWriter, read_jsonl
from tests.training.tiny_config import run_config


class ListData:
  """A plain iterator of prompt batches with the get_state / set_state the loop saves."""

  def __init__(self, batches):
    self.batches, self.i = batches, 0

  def __next__(self):
    self.i += 1
    return self.batches[self.i - 1]

  def get_state(self):
    return {'i': self.i}

  def set_state(self, state):
    self.i = state['i']


def _parts(exp, tmp_path, reward, prompts, params):
  """ScoreParts from exp's objects (tokenizer, graphdef, mesh) and a given reward."""
  cfg = exp.cfg
  tx = state_lib.make_optimizer(config_lib.optim_config(cfg))
  shardings = state_lib.state_shardings(params, tx, exp.mesh, exp.strategy.rules)
  state = state_lib.init_train_state(params, tx, jax.random.key(0), shardings)
  compiled = {}

  def update(stage, state, ref, batch):
    if stage not in compiled:
      compiled[stage] = step_lib.compile_step(
          exp.graphdef, tx, config_lib.loss_config(cfg), stage, exp.mesh, exp.strategy.rules,
          shardings, shardings.params, batch)
    return compiled[stage](state, ref, batch)

  parts = loop_lib.ScoreParts(
      attempts=TwoAttempts(exp.sampler(1.0), exp.chunk_ids, exp.tokenizer, exp.prompt_format,
                           reward),
      examples=exp.task.load_examples('train'), data=ListData(prompts), update=update,
      to_global=lambda b: sh.host_local_batch_to_global(b, exp.mesh, exp.strategy.rules),
      for_sampling=lambda p: p, policy=lambda p: p,
      checkpointer=Checkpointer(CheckpointConfig(directory=str(tmp_path / 'ckpt'), every=2,
                                                 async_save=False)),
      writer=MetricsWriter(tmp_path / 'log'))
  return parts, state


def test_loop_runs_on_hand_made_parts_and_calls_only_them(tmp_path, monkeypatch):
  exp = Experiment(run_config(tmp_path))
  params = exp.init_params(0)
  examples = exp.task.load_examples('train')
  prompts = [b for _, b in zip(range(3), exp.pipeline(examples, 4, seed=5, train=True))]
  seen = []

  def reward(exs, texts):   # the user's reward: 1 for an even number of characters
    out = [float(len(t) % 2 == 0) for t in texts]
    seen.append(out)
    return out

  parts, state = _parts(exp, tmp_path, reward, prompts, params)
  for name, value in vars(Experiment).items():   # the loop must not call back into exp
    if callable(value) and not name.startswith('__'):
      monkeypatch.setattr(Experiment, name, lambda *a, _n=name, **k: pytest.fail(_n))
  cfg = loop_lib.LoopConfig(schedule=(('stage1', 1), ('stage2', 2)), samples_per_prompt=2,
                            sample_seed=1)
  state, history = loop_lib.run(parts, cfg, state, params, start=0, end=3)
  parts.writer.close()
  parts.checkpointer.close()
  # Rows: each step's prompts, 2 samples each; the logged accuracies are the means of
  # what the user's reward returned (y1 then y2 per step).
  assert [h['stage'] for h in history] == ['stage1', 'stage2', 'stage2']
  assert [h['prompts'] for h in history] == [b.index_B.tolist() for b in prompts]
  assert len(seen) == 6 and all(len(r) == 8 for r in seen)
  for i, h in enumerate(history):
    assert h['acc_t1'] == pytest.approx(np.mean(seen[2 * i]))
    assert h['acc_t2'] == pytest.approx(np.mean(seen[2 * i + 1]))
  assert int(state.step) == 3
  assert parts.checkpointer.latest_step() == 3            # the last step is saved
  logged = read_jsonl(tmp_path / 'log' / 'metrics.jsonl')
  assert [r['step'] for r in logged] == [1, 2, 3]
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
           for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params))]
  assert max(moved) > 0


def test_prompt_batch_repeat_keeps_each_prompts_samples_together():
  b = PromptBatch(np.arange(6).reshape(3, 2), np.ones((3, 2), bool), np.array([4, 7, -1]))
  r = b.repeat(2)
  assert r.index_B.tolist() == [4, 4, 7, 7, -1, -1]
  assert r.ids_BP.tolist() == [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]
  assert dataclasses.is_dataclass(r) and jax.tree.leaves(r)[0].shape == (6, 2)
