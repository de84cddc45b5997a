"""Preference pairs: JSONL errors name file:line; best-vs-worst pairs derived by hand."""
import json

import numpy as np
import pytest

from score_jax.batches import ScoreBatch
from score_jax.preference import data as data_lib
from score_jax.training.experiment import Experiment
from tests.training.tiny_config import run_config


def _write(tmp_path, lines):
  path = tmp_path / 'pairs.jsonl'
  path.write_text('\n'.join(l if isinstance(l, str) else json.dumps(l) for l in lines) + '\n')
  return path


GOOD = {'prompt': '1+2=', 'chosen': '03', 'rejected': '04'}


def test_load_pairs_reads_lines_and_skips_blank_ones(tmp_path):
  path = _write(tmp_path, [GOOD, '', dict(GOOD, chosen='3', rejected='5')])
  pairs = data_lib.load_pairs(path)
  assert [(p.prompt, p.chosen, p.rejected, p.line) for p in pairs] == [
      ('1+2=', '03', '04', 1), ('1+2=', '3', '5', 3)]


@pytest.mark.parametrize('bad, message', [
    ({'prompt': '1+2=', 'chosen': '03'}, "pairs.jsonl:2: field 'rejected' missing"),
    (dict(GOOD, chosen='  '), "pairs.jsonl:2: field 'chosen' is empty"),
    (dict(GOOD, rejected='03'), "pairs.jsonl:2: 'chosen' and 'rejected' are identical"),
    (dict(GOOD, prompt=3), "pairs.jsonl:2: field 'prompt' is int"),
    ('{"prompt": ', 'pairs.jsonl:2: invalid JSON'),
    ('[1, 2]', 'pairs.jsonl:2: expected a JSON object'),
])
def test_bad_lines_fail_with_one_line_naming_file_and_line(tmp_path, bad, message):
  path = _write(tmp_path, [GOOD, bad])
  with pytest.raises(ValueError) as e:
    data_lib.load_pairs(path)
  assert message in str(e.value)
  assert str(e.value).startswith(str(path) + ':2: ')
  assert '\n' not in str(e.value)


def test_empty_or_missing_file(tmp_path):
  with pytest.raises(ValueError, match='no preference pairs'):
    data_lib.load_pairs(_write(tmp_path, ['']))
  with pytest.raises(FileNotFoundError, match='not found'):
    data_lib.load_pairs(tmp_path / 'nope.jsonl')


def test_best_worst_by_hand():
  # Two prompts, k = 3: scores (0, 2, 1) and (1, 1, 1) (a tie: weight 0).
  chosen, rejected, weight = data_lib.best_worst(np.array([0, 2, 1, 1, 1, 1]), 3)
  np.testing.assert_array_equal(chosen, [1, 3])
  np.testing.assert_array_equal(rejected, [0, 3])
  np.testing.assert_array_equal(weight, [1, 0])
  with pytest.raises(ValueError, match='multiple of k=4'):
    data_lib.best_worst(np.zeros(6), 4)


def test_online_batch_puts_chosen_first_and_scores_both_attempts():
  b, t = 4, 5
  tokens = np.arange(b * t).reshape(b, t)
  y1 = np.zeros((b, t), bool)
  y1[:, 1] = True
  y2 = np.zeros((b, t), bool)
  y2[:, 3] = True
  r_B = np.zeros(b, np.float32)
  tb = ScoreBatch(tokens, np.ones((b, t), bool), y1, y2, r_B, r_B)
  batch, chosen, rejected = data_lib.online_batch(tb, np.array([0., 1., 5., 2.]), 2)
  np.testing.assert_array_equal(batch.tokens_BT[:, 0], [5, 10, 0, 15])   # rows 1,2 | 0,3
  np.testing.assert_array_equal(batch.response_mask_BT[0], [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(batch.weight_B, [1, 1, 1, 1])


def test_pack_pairs_scores_only_the_response(tmp_path):
  exp = Experiment(run_config(tmp_path))
  pairs = [data_lib.PreferencePair('1+2=', '3', '4'), data_lib.PreferencePair('2+2=', '4', '5')]
  batch = data_lib.pack_pairs(exp, pairs)
  eot = exp.tokenizer.end_of_turn_id
  for row, text in enumerate(['3', '4', '4', '5']):   # chosen rows, then rejected
    ids = batch.tokens_BT[row][batch.response_mask_BT[row]].tolist()
    assert ids == exp.tokenizer.encode(text) + [eot]
  np.testing.assert_array_equal(batch.weight_B, 1.0)
