"""The RLAIF judge: P(yes) against the model's own full forward; swap removes position bias."""
import jax
import numpy as np
import pytest

from score_jax.models.transformer import causal_mask
from score_jax.preference import judge as judge_lib
from score_jax.training.experiment import Experiment
from tests.training.tiny_config import run_config

import jax.numpy as jnp

CFG = judge_lib.JudgeConfig(template='{question}{response}', yes='1', no='0',
                            pairwise_template='{question}{first}+{second}=', first='1',
                            second='2', batch_size=4)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  exp = Experiment(run_config(tmp_path_factory.mktemp('judge')))
  params = exp.init_params(3)
  return exp, params, judge_lib.Judge(exp.graphdef, params, exp.tokenizer, CFG)


def _direct(exp, params, prompt, ids):
  """P(ids[0]) / (P(ids[0]) + P(ids[1])) from one unpadded forward of the full model."""
  from flax import nnx
  tokens = jnp.asarray([exp.tokenizer.chat_prompt_ids(prompt)], jnp.int32)
  pos = jnp.arange(tokens.shape[1])[None]
  logits, _ = nnx.merge(exp.graphdef, params)(tokens, pos, causal_mask(pos, tokens >= 0))
  p = jax.nn.softmax(logits[0, -1].astype(jnp.float32))
  return float(p[ids[0]] / (p[ids[0]] + p[ids[1]]))


def test_yes_probability_matches_a_direct_forward(setup):
  exp, params, judge = setup
  qs = ['1+2=', '3+4=', '5+5=', '0+0=', '9+9=']   # 5 rows: two chunks of batch_size 4
  rs = ['03', '7', '010', '00', '18']
  got = judge.yes_probability(qs, rs)
  want = [_direct(exp, params, q + r, judge.verdict_ids) for q, r in zip(qs, rs)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert judge.verdict_ids == (exp.tokenizer.encode('1')[0], exp.tokenizer.encode('0')[0])


def test_swapping_removes_position_bias(setup):
  _, _, judge = setup
  qs, a, b = ['1+2=', '4+4='], ['03', '08'], ['04', '09']
  ab, ba = judge.prefer(qs, a, b), judge.prefer(qs, b, a)
  np.testing.assert_allclose(ab + ba, 1.0, atol=1e-6)
  np.testing.assert_allclose(judge.prefer(qs, a, a), 0.5, atol=1e-6)


def test_round_robin_shares_out_one_win_per_pair(setup):
  _, _, judge = setup
  k = 3
  scores = judge.round_robin(['1+2='] * 6, ['03', '04', '05', '1', '2', '3'], k)
  # Each of the k(k-1)/2 pairs hands out one win in total; score = wins / (k-1).
  np.testing.assert_allclose(scores.reshape(2, k).sum(1), k / 2, atol=1e-5)
  want0 = 0.5 * (judge.prefer(['1+2='], ['03'], ['04'])[0]
                 + judge.prefer(['1+2='], ['03'], ['05'])[0])
  assert scores[0] == pytest.approx(want0, abs=1e-6)


def test_verdict_words_must_be_distinct_pieces(setup):
  exp, params, _ = setup
  with pytest.raises(ValueError, match=r"config.dpo.judge.yes='Q'.*no piece"):
    judge_lib.Judge(exp.graphdef, params, exp.tokenizer,
                    judge_lib.JudgeConfig(yes='Q', no='0', first='1', second='2'))
  with pytest.raises(ValueError, match='start with the same token'):
    judge_lib.Judge(exp.graphdef, params, exp.tokenizer,
                    judge_lib.JudgeConfig(yes='1', no='12', first='1', second='2'))


def test_judge_reward_task_scores_with_the_judge(setup):
  exp, _, judge = setup
  task = judge_lib.JudgeRewardTask(exp.task, judge)
  exs = exp.task.load_examples('train')[:3]
  responses = ['03', '1', '5']
  want = judge.yes_probability([exp.task.first_turn_prompt(e) for e in exs], responses)
  np.testing.assert_allclose(task.rewards(exs, responses), want)
  assert task.correction_instruction == exp.task.correction_instruction
