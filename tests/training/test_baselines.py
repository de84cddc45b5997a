"""STaR and Pair-SFT data: which traces they keep, and that only y2 carries the loss.

The expected rows are derived by hand from the paper's definitions
(shared/design/score-method.md), not from the builders' own output.
Too little sampled data raises TooLittleData instead of returning the base model.
"""
import numpy as np
import pytest

from score_jax.training import baselines
from score_jax.training import base_sft as base_sft_lib
from score_jax.training.experiment import Experiment
from tests.training.tiny_config import run_config


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
  return Experiment(run_config(tmp_path_factory.mktemp('baselines')))


def _ids(exp, text):
  return exp.tokenizer.encode(text)


def _turns(exp, traces, row):
  """(y1 text, y2 text) of one packed row, read back through its masks."""
  tok = np.asarray(traces.tokens_BT)[row]
  y1 = tok[np.asarray(traces.y1_mask_BT)[row]].tolist()
  y2 = tok[np.asarray(traces.y2_mask_BT)[row]].tolist()
  eot = exp.tokenizer.end_of_turn_id
  assert y1[-1] == eot and y2[-1] == eot
  return exp.tokenizer.decode(y1[:-1]), exp.tokenizer.decode(y2[:-1])


def _loss_only_on_y2(traces, target):
  target = np.asarray(target)
  np.testing.assert_array_equal(target, np.asarray(traces.y2_mask_BT))
  for other in (traces.prompt_mask_BT, traces.y1_mask_BT, traces.chunk_mask_BT):
    assert not (target & np.asarray(other)).any()


def test_star_keeps_wrong_to_right_and_right_to_right(exp):
  # (r1, r2, y1, y2): D+ keeps rows 0 (wrong->right) and 2 (right->right), drops
  # right->wrong (1) and wrong->wrong (3).
  r1 = np.array([0, 1, 1, 0])
  r2 = np.array([1, 0, 1, 0])
  texts = [('12', '13'), ('13', '31'), ('13', '13'), ('10', '11')]
  y1s = [_ids(exp, a) for a, _ in texts]
  y2s = [_ids(exp, b) for _, b in texts]
  questions = ['5+8=', '6+7=', '7+6=', '9+9=']
  traces, target = base_sft_lib.star_data(r1, r2, y1s, y2s, questions, exp,
                                        keep_right_right=True)
  assert [_turns(exp, traces, i) for i in range(2)] == [('12', '13'), ('13', '13')]
  _loss_only_on_y2(traces, target)

  only_fixes, _ = base_sft_lib.star_data(r1, r2, y1s, y2s, questions, exp,
                                       keep_right_right=False)
  assert np.asarray(only_fixes.tokens_BT).shape[0] == 1
  assert _turns(exp, only_fixes, 0) == ('12', '13')


def test_pair_sft_pairs_a_wrong_and_a_right_answer_of_the_same_problem(exp):
  questions = ['1+1=', '2+2=', '3+3=', '4+4=']
  by_problem = {
      0: ([_ids(exp, '03'), _ids(exp, '01')], [_ids(exp, '02')]),  # both: kept
      1: ([_ids(exp, '05')], []),                                   # no right answer
      2: ([], [_ids(exp, '06')]),                                   # no wrong answer
      3: ([_ids(exp, '09')], [_ids(exp, '08'), _ids(exp, '08')]),   # both: kept
  }
  traces, target = base_sft_lib.pair_sft_data(by_problem, questions, exp, seed=0)
  rows = [_turns(exp, traces, i) for i in range(np.asarray(traces.tokens_BT).shape[0])]
  assert len(rows) == 2
  assert rows[0][0] in ('03', '01') and rows[0][1] == '02'
  assert rows[1] == ('09', '08')
  # Each row's prompt is its own problem's question.
  for i, q in enumerate(['1+1=', '4+4=']):
    prompt = np.asarray(traces.tokens_BT)[i][np.asarray(traces.prompt_mask_BT)[i]]
    assert prompt.tolist() == list(exp.tokenizer.chat_prompt_ids(q))
  _loss_only_on_y2(traces, target)


@pytest.mark.parametrize('builder', ['star', 'pair_sft'])
def test_too_little_data_raises_instead_of_passing_off_the_base_model(exp, builder):
  # 2 problems x 1 sample give at most 2 traces: not one SFT batch of 64. On main
  # the builders returned the untouched base model, which compare.py then reported
  # as STaR / Pair-SFT.
  extra = {'iterations': 2} if builder == 'star' else {}
  with pytest.raises(baselines.TooLittleData, match='fewer than one SFT batch'):
    getattr(baselines, builder)(exp, exp.init_params(0), num_problems=2, samples=1,
                                steps=1, batch_size=64, learning_rate=1e-3, seed=0,
                                **extra)
