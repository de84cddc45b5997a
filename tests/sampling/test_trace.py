"""CorrectionTrace packing against hand-written layouts."""
import numpy as np
import pytest

from score_jax.sampling import pack_traces, turn_ids

EOT, EOS, PAD = 106, 1, 0


def test_pack_traces_layout_by_hand():
  trace = pack_traces(prompts=[[2, 5, 6], [2, 7]], y1s=[[8, EOT], [9, 9, 9]],
                      chunk=[EOT, 50, 51], y2s=[[60, EOS], [61]], pad_id=PAD,
                      length=12, stop_ids=(EOS, EOT))
  np.testing.assert_array_equal(trace.tokens_BT, [
      [2, 5, 6, 8, EOT, 50, 51, 60, EOS, PAD, PAD, PAD],   # y1 ended on EOT: p[0] dropped
      [2, 7, 9, 9, 9, EOT, 50, 51, 61, PAD, PAD, PAD]])    # budget: p[0] closes y1
  as_bool = lambda rows: np.array([[c == '1' for c in r] for r in rows])
  np.testing.assert_array_equal(trace.valid_BT, as_bool(['111111111000', '111111111000']))
  np.testing.assert_array_equal(trace.prompt_mask_BT, as_bool(['111000000000',
                                                               '110000000000']))
  np.testing.assert_array_equal(trace.y1_mask_BT, as_bool(['000110000000',
                                                           '001110000000']))
  np.testing.assert_array_equal(trace.chunk_mask_BT, as_bool(['000001100000',
                                                              '000001110000']))
  np.testing.assert_array_equal(trace.y2_mask_BT, as_bool(['000000011000',
                                                           '000000001000']))
  np.testing.assert_array_equal(trace.prompt_len_B, [3, 2])
  np.testing.assert_array_equal(trace.y1_len_B, [2, 3])
  np.testing.assert_array_equal(trace.chunk_len_B, [2, 3])
  np.testing.assert_array_equal(trace.y2_len_B, [2, 1])
  np.testing.assert_array_equal(trace.y1_stop_B, [0, 1])
  np.testing.assert_array_equal(trace.y2_stop_B, [0, 1])
  np.testing.assert_array_equal(trace.sample_logprob_BT, 0.0)
  assert turn_ids(trace, 1) == [[8], [9, 9, 9]]
  assert turn_ids(trace, 2) == [[60], [61]]


def test_pack_traces_single_turn_and_errors():
  trace = pack_traces([[2, 5]], [[7, EOS]], chunk=[], y2s=None, pad_id=PAD, length=5,
                      stop_ids=(EOS,))
  np.testing.assert_array_equal(trace.tokens_BT, [[2, 5, 7, EOS, PAD]])
  assert turn_ids(trace, 1) == [[7]] and turn_ids(trace, 2) == [[]]
  with pytest.raises(ValueError, match='row 0 has 4 tokens; length=3'):
    pack_traces([[2, 5]], [[7, EOS]], [], None, PAD, length=3)
  with pytest.raises(ValueError, match='expected one of each per row'):
    pack_traces([[2, 5]], [], [], None, PAD, length=3)
  with pytest.raises(ValueError, match='turn=3'):
    turn_ids(trace, 3)
