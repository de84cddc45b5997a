"""launch/peers.py's Tunix plumbing: reading peer_tunix.py's JSON lines, and a
failing Tunix interpreter costing one line saying why, not the benchmark."""
import importlib.util
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'launch'))   # peers imports peer_tunix as a sibling

import peers  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax.models import get_preset  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_parse_json_lines_keeps_rows_and_skips_logs():
  text = ('WARNING: Using deprecated _init_cache\n'
          '{"batch": 1, "tunix_tok_s": 12.5}\n'
          '  {"batch": 8, "tunix_tok_s": 90.0}  \n'
          '{not json\n'
          '{"other": 3}\n'
          '[1, 2]\n')
  assert peers.parse_json_lines(text) == {1: {'batch': 1, 'tunix_tok_s': 12.5},
                                          8: {'batch': 8, 'tunix_tok_s': 90.0}}


@pytest.mark.skipif(importlib.util.find_spec('tunix') is not None,
                    reason='needs a Python without google-tunix')
def test_tunix_peer_failure_prints_one_line_why(capsys):
  cfg = get_preset(peers.PEER_BASE, **peers.PEER_OVERRIDES)
  lens = (4, 2, 2, 2)
  # This test's Python has no google-tunix: peer_tunix.py fails on `import tunix`.
  assert peers.tunix_peer(sys.executable, cfg, [1], lens, repeats=1) == {}
  out = capsys.readouterr().out.strip().splitlines()[1:]   # after 'Tunix sampler: ...'
  assert len(out) == 1 and sys.executable in out[0], out
  assert 'cannot import google-tunix' in out[0], out
  missing = str(REPO / 'no-such-python')
  assert peers.tunix_peer(missing, cfg, [1], lens, repeats=1) == {}
  out = capsys.readouterr().out.strip().splitlines()[1:]
  assert len(out) == 1 and missing in out[0], out
