"""The `dpo` stage: its step against an independent forward, and online DPO on a bandit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.batches import PairBatch
from score_jax import config as config_lib
from score_jax import losses
from score_jax.models.transformer import causal_mask
from score_jax.training import step as step_lib
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_score
from tests.training.tiny_config import LeadingDigitBandit, run_config
from tests.training import full_logits


def _batch(exp, rng):
  """4 pairs of random response tokens after real prompts; the last pair has weight 0."""
  p, t = 4, 12
  tokens = rng.integers(4, exp.tokenizer.vocab_size, size=(2 * p, t)).astype(np.int32)
  valid = np.ones((2 * p, t), bool)
  valid[:, 10:] = False
  response = np.zeros((2 * p, t), bool)
  response[:, 5:10] = True
  weight = np.array([1, 1, 1, 0] * 2, np.float32)
  return PairBatch(tokens, valid, response, weight)


def _seq_logp(exp, params, batch):
  """Sum of log pi(token) over the response, from the model's plain full forward."""
  tokens = jnp.asarray(batch.tokens_BT)
  pos = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  logits, _ = nnx.merge(exp.graphdef, params)(tokens, pos,
                                              causal_mask(pos, jnp.asarray(batch.valid_BT)))
  logp = full_logits.next_token_log_probs(logits, tokens)
  return np.asarray(jnp.sum(jnp.where(batch.response_mask_BT, logp, 0.0), axis=1))


def test_dpo_step_loss_matches_dpo_of_independent_log_probs(tmp_path):
  exp = Experiment(run_config(tmp_path))
  params, ref = exp.init_params(0), exp.init_params(1)
  batch = _batch(exp, np.random.default_rng(0))
  cfg = losses.DPOConfig(beta=0.5, label_smoothing=0.1)
  loss, m = step_lib.dpo_step_loss(params, ref, batch, graphdef=exp.graphdef, loss_cfg=cfg)
  lp, lq = _seq_logp(exp, params, batch), _seq_logp(exp, ref, batch)
  h = (lp[:4] - lq[:4]) - (lp[4:] - lq[4:])
  per = -(0.9 * jax.nn.log_sigmoid(0.5 * h) + 0.1 * jax.nn.log_sigmoid(-0.5 * h))
  assert float(loss) == pytest.approx(float(np.mean(per[:3])), rel=1e-4)
  assert float(m['dpo/pairs']) == 3.0
  # The policy as its own reference: h = 0, loss = log 2, no pair ranked right.
  loss0, m0 = step_lib.dpo_step_loss(params, params, batch, graphdef=exp.graphdef,
                                     loss_cfg=cfg)
  assert float(loss0) == pytest.approx(np.log(2.0), rel=1e-5)
  assert float(m0['dpo/reward_accuracy']) == 0.0


def test_online_dpo_with_oracle_pairs_learns_a_bandit(tmp_path):
  cfg = run_config(tmp_path, schedule=(('dpo', 24),))
  cfg.optim.learning_rate = 3e-2
  cfg.dpo.beta = 0.5
  cfg.dpo.scorer = 'oracle'
  cfg.checkpoint.every = 12
  exp = Experiment(cfg, task=LeadingDigitBandit(digits=1, num_train=40, num_test=15))
  base = exp.init_params(0)
  before = exp.evaluate(base, temperature=1.0, seed=1)
  result = train_score(exp, base, base)
  after = exp.evaluate(result.params, temperature=1.0, seed=1)
  h = result.history
  print(f'Acc@t1 before {before["acc_t1"]:.3f} after {after["acc_t1"]:.3f}')
  assert after['acc_t1'] >= before['acc_t1'] + 0.3
  assert all(r['stage'] == 'dpo' for r in h)
  # Oracle pairs always put a rewarded episode first when a prompt has one.
  assert all(r['dpo/pair_oracle_agreement'] == 1.0 for r in h if r['dpo/pairs'] > 0)
  assert (exp.workdir / 'score' / 'checkpoints').is_dir()


def test_schedule_accepts_dpo_and_bad_dpo_config_is_one_line(tmp_path):
  cfg = run_config(tmp_path, schedule=(('dpo', 2), ('stage2', 1)))
  assert config_lib.schedule(cfg) == [('dpo', 2), ('stage2', 1)]
  cfg.dpo.loss_type = 'hinge'
  with pytest.raises(ValueError, match=r"config\.dpo\.loss_type='hinge'"):
    config_lib.dpo_config(cfg)


def test_offline_pairs_from_jsonl_raise_the_chosen_margin(tmp_path):
  path = tmp_path / 'pairs.jsonl'
  lines = [f'{{"prompt": "{a}+{b}=", "chosen": "{a + b}", "rejected": "{(a + b + 1) % 10}"}}'
           for a in range(3) for b in range(3)]
  path.write_text('\n'.join(lines[:8]) + '\n')
  from score_jax.preference import data as data_lib
  from score_jax.preference import offline
  cfg = run_config(tmp_path)
  cfg.optim.learning_rate = 1e-2
  exp = Experiment(cfg)
  base = exp.init_params(0)
  batch = data_lib.pack_pairs(exp, data_lib.load_pairs(path))
  params = offline.train_pairs(exp, base, base, batch, steps=10, pairs_per_step=8)
  cfg = config_lib.dpo_config(exp.cfg)
  _, m = step_lib.dpo_step_loss(params, base, batch, graphdef=exp.graphdef, loss_cfg=cfg)
  # Trained on these pairs: chosen now gains log-prob relative to rejected on most.
  assert float(m['dpo/margin']) > 0
  assert float(m['dpo/reward_accuracy']) >= 0.75
