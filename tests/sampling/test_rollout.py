"""The two-turn sampler against uncached full forwards of tiny Gemma 1, 2 and 3.

Every rollout is checked against ONE fresh forward over its packed trace
(positions = arange, mask = causal & valid): greedy tokens must be that forward's
argmax path and the recorded log-probs its log-softmax. Prompts plus two turns
run far past gemma2/3_tiny's sliding window of 8.
"""
import itertools
import types

import jax
import numpy as np
import pytest

from score_jax.sampling import Sampler, SamplingConfig, turn_ids

PRESETS = ('gemma_tiny', 'gemma2_tiny', 'gemma3_tiny', 'gemma4_tiny', 'gemma4_moe_tiny')

M1, M2 = 12, 10
TAIL = [10, 20, 30, 40, 10]        # the correction chunk after its first token
LENGTHS = [8, 3, 5, 1, 0, 7]       # row 4 is batch padding
HOLES = [(5, 3)]                   # row 5 has a masked slot inside its prompt
PAD_ROW = 4


def config(**kw):
  base = dict(stop_ids=(), pad_id=0, temperature=0.0, max_y1_tokens=M1,
              max_y2_tokens=M2, prompt_buckets=(8, 16))
  return SamplingConfig(**(base | kw))


def choose_stops(paths):
  """(eot, eos) such that, truncating the greedy y1 paths at the first stop id,
  some row ends on eot, some on eos and some runs out of budget; the latest
  such stops are preferred so that rows decode several tokens before stopping."""
  best, best_score = None, -1
  paths = [p for p in paths if p]   # a batch-padding row never starts
  tokens = sorted({t for p in paths for t in p} - {0, 2})   # not pad or bos
  for eot, eos in itertools.permutations(tokens, 2):
    ends = []
    for p in paths:
      hit = [i for i, t in enumerate(p) if t in (eot, eos)]
      ends.append((p[hit[0]], hit[0]) if hit else (None, len(p)))
    kinds = {e for e, _ in ends}
    if {eot, eos, None} <= kinds:
      score = min(i for e, i in ends if e is not None)
      if score > best_score:
        best, best_score = (eot, eos), score
  assert best is not None, paths
  return best


def check_against_full_forward(model, trace, full_forward, greedy):
  argmax_BT, lp_BT = full_forward(model, trace)
  target_BT = np.asarray(trace.y1_mask_BT | trace.y2_mask_BT)[:, 1:]
  assert target_BT.sum() > 0
  if greedy:
    tokens_BT = np.asarray(trace.tokens_BT)
    np.testing.assert_array_equal(np.where(target_BT, argmax_BT[:, :-1], -1),
                                  np.where(target_BT, tokens_BT[:, 1:], -1))
  got_BT = np.asarray(trace.sample_logprob_BT)[:, 1:]
  np.testing.assert_allclose(np.where(target_BT, got_BT, 0),
                             np.where(target_BT, lp_BT[:, :-1], 0), atol=1e-4, rtol=0)
  assert np.all(np.asarray(trace.sample_logprob_BT)[~np.asarray(
      trace.y1_mask_BT | trace.y2_mask_BT)] == 0)


@pytest.fixture(scope='module', params=PRESETS)
def greedy(request, tiny_model, make_prompts):
  """A greedy rollout with stop ids picked (from a stop-free probe) to cover every case."""
  model, graphdef, params = tiny_model(request.param)
  ids, mask = make_prompts(LENGTHS, 8, holes=HOLES)
  probe_sampler = Sampler(graphdef, config())
  probe = probe_sampler.rollout(params, ids, mask, [5] + TAIL, jax.random.key(0))
  eot, eos = choose_stops(turn_ids(probe, 1))
  sampler = Sampler(graphdef, config(stop_ids=(eos, eot)))
  chunk = [eot] + TAIL
  trace = sampler.rollout(params, ids, mask, chunk, jax.random.key(0))
  return types.SimpleNamespace(preset=request.param, model=model, params=params, ids=ids,
                               mask=mask, probe=probe, sampler=sampler, trace=trace,
                               eot=eot, eos=eos, chunk=chunk)


def test_greedy_two_turns_are_the_full_forward_argmax_path(greedy, full_forward):
  for trace in (greedy.probe, greedy.trace):
    check_against_full_forward(greedy.model, trace, full_forward, greedy=True)
  assert int(np.max(greedy.trace.valid_BT.sum(1))) > 3 * 8   # well past the window


def test_stops_lengths_and_chunk_merge(greedy):
  t = jax.tree.map(np.asarray, greedy.trace)
  c = len(greedy.chunk)
  y1 = turn_ids(greedy.trace, 1)
  for b in range(len(LENGTHS)):
    assert t.prompt_len_B[b] == sum(greedy.mask[b])
    if b == PAD_ROW:
      assert t.valid_BT[b].sum() == 0 and t.y1_len_B[b] == t.y2_len_B[b] == 0
      continue
    y1_full = t.tokens_BT[b][t.y1_mask_BT[b]]
    for full, n, stop, m in ((y1_full, t.y1_len_B[b], t.y1_stop_B[b], M1),
                             (t.tokens_BT[b][t.y2_mask_BT[b]], t.y2_len_B[b],
                              t.y2_stop_B[b], M2)):
      assert len(full) == n
      stopped = [i for i, tok in enumerate(full) if tok in (greedy.eot, greedy.eos)]
      if stop == 0:
        assert stopped == [n - 1]
      else:
        assert stopped == [] and n == m
    merged = t.y1_stop_B[b] == 0 and y1_full[-1] == greedy.eot
    assert t.chunk_len_B[b] == c - merged
    np.testing.assert_array_equal(t.tokens_BT[b][t.chunk_mask_BT[b]],
                                  greedy.chunk[int(merged):])
    assert y1[b] == y1_full[:len(y1_full) - (t.y1_stop_B[b] == 0)].tolist()
    # Packed order: x, y1, p, y2, then padding.
    seg = (1 * t.prompt_mask_BT[b] + 2 * t.y1_mask_BT[b] + 3 * t.chunk_mask_BT[b]
           + 4 * t.y2_mask_BT[b])
    assert list(seg) == sorted(seg[seg > 0]) + [0] * int((seg == 0).sum())
  # The stops were chosen so that every case occurs.
  ends = {(int(t.y1_stop_B[b]), int(t.tokens_BT[b][t.y1_mask_BT[b]][-1]))
          for b in range(len(LENGTHS)) if b != PAD_ROW}
  assert {(0, greedy.eot), (0, greedy.eos)} <= ends
  assert 1 in {stop for stop, _ in ends}


def test_given_y1_reprefill_matches_the_cached_rollout(greedy):
  """x and y1 prefilled in one forward, then the chunk and y2: same trace."""
  t = greedy.trace
  y1_ids = np.zeros((len(LENGTHS), M1), np.int32)
  y1_mask = np.zeros((len(LENGTHS), M1), bool)
  for b, (row, m) in enumerate(zip(np.asarray(t.tokens_BT), np.asarray(t.y1_mask_BT))):
    y1_ids[b, :m.sum()] = row[m]
    y1_mask[b, :m.sum()] = True
  counts = dict(greedy.sampler.trace_counts)
  given = greedy.sampler.rollout(greedy.params, greedy.ids, greedy.mask, greedy.chunk,
                                 jax.random.key(0), y1_ids_BM=y1_ids, y1_mask_BM=y1_mask)
  for name in ('tokens_BT', 'valid_BT', 'prompt_mask_BT', 'y1_mask_BT', 'chunk_mask_BT',
               'y2_mask_BT', 'y1_len_B', 'y2_len_B', 'chunk_len_B', 'y1_stop_B',
               'y2_stop_B'):
    np.testing.assert_array_equal(getattr(given, name), getattr(t, name), err_msg=name)
  np.testing.assert_allclose(given.sample_logprob_BT, t.sample_logprob_BT, atol=1e-4)
  # Only the [x, y1] prefill is a new shape; the rest reuses the compiled code.
  new = {k: v - counts.get(k, 0) for k, v in greedy.sampler.trace_counts.items()}
  assert new == {'prefill': 1, 'extend': 0, 'decode': 0, 'pack': 0}


@pytest.mark.parametrize('greedy', ['gemma3_tiny'], indirect=True)
def test_same_bucket_does_not_recompile(greedy, make_prompts):
  counts = dict(greedy.sampler.trace_counts)
  for width, lengths in ((6, [6, 2, 4, 1, 0, 5]), (7, [7, 7, 2, 3, 1, 1])):
    ids, mask = make_prompts(lengths, width, seed=width)
    greedy.sampler.rollout(greedy.params, ids, mask, greedy.chunk, jax.random.key(1))
  assert dict(greedy.sampler.trace_counts) == counts
  ids, mask = make_prompts([12, 3, 1, 1, 1, 1], 12, seed=3)   # the next bucket
  greedy.sampler.rollout(greedy.params, ids, mask, greedy.chunk, jax.random.key(1))
  new = {k: v - counts[k] for k, v in greedy.sampler.trace_counts.items()}
  assert new == {'prefill': 1, 'extend': 1, 'decode': 1, 'pack': 1}


@pytest.mark.parametrize('greedy', ['gemma_tiny'], indirect=True)
def test_top_k_1_equals_greedy(greedy):
  top1 = Sampler(greedy.sampler.graphdef, config(temperature=1.0, top_k=1))
  trace = top1.rollout(greedy.params, greedy.ids, greedy.mask, [5] + TAIL,
                       jax.random.key(3))
  for name in ('tokens_BT', 'valid_BT', 'y1_mask_BT', 'y2_mask_BT'):
    np.testing.assert_array_equal(getattr(trace, name), getattr(greedy.probe, name))
  np.testing.assert_allclose(trace.sample_logprob_BT, greedy.probe.sample_logprob_BT,
                             atol=1e-5)


STOPS = tuple(range(200, 216))     # 1/16 of the vocabulary: some rows stop, some not


@pytest.fixture(scope='module')
def sampled(tiny_model, make_prompts):
  """gemma3_tiny sampled at temperature 1 with a wide stop set."""
  model, graphdef, params = tiny_model('gemma3_tiny')
  ids, mask = make_prompts(LENGTHS, 8, seed=1, holes=HOLES)
  sampler = Sampler(graphdef, config(temperature=1.0, stop_ids=STOPS))
  chunk = [STOPS[0]] + TAIL
  trace = sampler.rollout(params, ids, mask, chunk, jax.random.key(42))
  return types.SimpleNamespace(model=model, params=params, ids=ids, mask=mask,
                               sampler=sampler, chunk=chunk, trace=trace)


def test_sampled_logprobs_equal_full_forward(sampled, full_forward):
  t = sampled.trace
  check_against_full_forward(sampled.model, t, full_forward, greedy=False)
  # Temperature 1 without top-k/p: the drawn distribution is the policy itself.
  np.testing.assert_allclose(t.dist_logprob_BT, t.sample_logprob_BT, atol=1e-5)
  stops = np.asarray(t.y1_stop_B)[np.arange(len(LENGTHS)) != PAD_ROW]
  assert set(stops.tolist()) == {0, 1}


def test_seeds_and_one_turn_generate(sampled):
  s, t = sampled, sampled.trace
  again = s.sampler.rollout(s.params, s.ids, s.mask, s.chunk, jax.random.key(42))
  other = s.sampler.rollout(s.params, s.ids, s.mask, s.chunk, jax.random.key(43))
  np.testing.assert_array_equal(again.tokens_BT, t.tokens_BT)
  assert (np.asarray(other.tokens_BT) != np.asarray(t.tokens_BT))[
      np.asarray(t.y1_mask_BT)].mean() > 0.5
  # generate(key) is rollout(key)'s first turn.
  gen = s.sampler.generate(s.params, s.ids, s.mask, jax.random.key(42))
  assert gen.ids() == turn_ids(t, 1)
  np.testing.assert_array_equal(gen.len_B, t.y1_len_B)
  np.testing.assert_array_equal(gen.stop_B, t.y1_stop_B)
  y1_lp = [r[m].tolist() for r, m in zip(np.asarray(t.sample_logprob_BT),
                                          np.asarray(t.y1_mask_BT))]
  for b, n in enumerate(np.asarray(gen.len_B)):
    np.testing.assert_allclose(np.asarray(gen.logprob_BM)[b, :n], y1_lp[b], atol=1e-5)


def test_decode_updates_the_donated_cache_in_place(sampled):
  s = sampled.sampler
  state = s.prefill(sampled.params, sampled.ids, sampled.mask, num_slots=8 + M1)
  k_XSH = state.cache.k_XSH
  state, len_B, _ = s.decode(sampled.params, state, jax.random.key(0), 8, M1)
  assert all(k.is_deleted() for k in k_XSH)   # donated: their buffers hold the new cache
  assert int(np.asarray(state.valid_BS).sum()) == sum(LENGTHS) - len(HOLES) + int(
      np.asarray(len_B).sum())


def test_one_step_distribution_is_the_model_softmax(sampled, chi_square_p):
  """2048 draws of the first token of one prompt vs softmax of a full forward."""
  n = 2048
  ids = np.repeat(sampled.ids[1:2], n, axis=0)
  mask = np.repeat(sampled.mask[1:2], n, axis=0)
  gen = sampled.sampler.generate(sampled.params, ids, mask, jax.random.key(7),
                                 max_tokens=1)
  p = int(mask[0].sum())
  logits_V = sampled.model(ids[:1, :p], np.arange(p)[None],
                           np.tril(np.ones((1, p, p), bool)))[0][0, -1]
  probs_V = np.asarray(jax.nn.softmax(logits_V.astype(np.float32)))
  counts_V = np.bincount(np.asarray(gen.tokens_BM)[:, 0], minlength=len(probs_V))
  assert chi_square_p(counts_V, probs_V) > 1e-3
  # The test has power: the distribution one position earlier is rejected.
  wrong_V = np.asarray(jax.nn.softmax(sampled.model(
      ids[:1, :p - 1], np.arange(p - 1)[None],
      np.tril(np.ones((1, p - 1, p - 1), bool)))[0][0, -1].astype(np.float32)))
  assert chi_square_p(counts_V, wrong_V) < 1e-6


def test_sharded_params_give_the_same_samples(sampled):
  """Params sharded over 8 CPU devices: jit follows them, results unchanged."""
  mesh = jax.make_mesh((8,), ('fsdp',), axis_types=(jax.sharding.AxisType.Auto,))

  def shard(x):   # the first axis divisible by 8, as an FSDP rule might pick
    axes = [None] * x.ndim
    for i, d in enumerate(x.shape):
      if d % 8 == 0:
        axes[i] = 'fsdp'
        break
    return jax.NamedSharding(mesh, jax.P(*axes))

  params = jax.device_put(sampled.params, jax.tree.map(shard, sampled.params))
  gen = sampled.sampler.generate(params, sampled.ids, sampled.mask, jax.random.key(42))
  assert gen.ids() == turn_ids(sampled.trace, 1)
