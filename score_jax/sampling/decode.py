"""Prefill and while-loop decode over one KV cache whose slots may hold gaps.

The cache has S slots, written left to right. A slot is valid when it holds a real
token; invalid slots (prompt padding, the steps after a row stopped, a dropped chunk
token) are masked out of attention. Positions count valid tokens only, so a row's
tokens see exactly what a packed, gap-free forward would show them.

`DecodeState` carries the cache plus, per slot, the token, its validity and its
log-probabilities, so a multi-turn trace can be packed at the end without any
re-computation. Both functions here are pure: (graphdef, params, state, ...) ->
state. The Sampler jits them with the state donated, so the cache updates in place.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax import struct

from score_jax.models.transformer import MAX_LOGITS, KVCache, init_cache, token_stats
from score_jax.sampling import rules


@struct.dataclass
class DecodeState:
  """A batch mid-generation. Slots are written in order; later ones are invalid."""
  cache: KVCache
  tokens_BS: jax.Array         # int32, the token in each slot
  valid_BS: jax.Array          # bool, the slot holds a real token
  logprob_BS: jax.Array        # float32, log pi(token | valid tokens before), raw logits
  dist_logprob_BS: jax.Array   # float32, log-prob under the sampling rule; 0 if not sampled
  next_pos_B: jax.Array        # int32, position of the next valid token
  last_token_B: jax.Array      # int32, the last valid token written
  logits_BV: jax.Array         # float32, raw logits after the last valid token

  @property
  def num_slots(self) -> int:
    return self.valid_BS.shape[1]


def init_state(graphdef: nnx.GraphDef, params: nnx.State, batch_size: int,
               num_slots: int) -> DecodeState:
  """An empty state: nothing valid, no logits yet (zeros)."""
  cfg = nnx.merge(graphdef, params).cfg
  b, s = batch_size, num_slots
  return DecodeState(
      cache=init_cache(cfg, b, s),
      tokens_BS=jnp.zeros((b, s), jnp.int32),
      valid_BS=jnp.zeros((b, s), bool),
      logprob_BS=jnp.zeros((b, s), jnp.float32),
      dist_logprob_BS=jnp.zeros((b, s), jnp.float32),
      next_pos_B=jnp.zeros((b,), jnp.int32),
      last_token_B=jnp.zeros((b,), jnp.int32),
      logits_BV=jnp.zeros((b, cfg.vocab_size), jnp.float32))


def _attention_inputs(state: DecodeState, mask_BT: jax.Array, start: jax.Array | int
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(valid_BS, positions_BT, attn_mask_BTS) for new tokens at slots [start, start+T).

  valid_BS: the slots' validity once mask_BT is written. positions_BT: each new
  token's position, counting valid tokens only (masked ones repeat the previous
  position, clipped at 0). attn_mask_BTS: valid slots up to the token's own.
  """
  t, s = mask_BT.shape[1], state.num_slots
  valid_BS = jax.lax.dynamic_update_slice(state.valid_BS, mask_BT, (0, start))
  positions_BT = state.next_pos_B[:, None] + jnp.cumsum(mask_BT, axis=1) - 1
  positions_BT = jnp.maximum(positions_BT, 0).astype(jnp.int32)
  slot_T = start + jnp.arange(t)
  causal_TS = jnp.arange(s)[None, :] <= slot_T[:, None]
  return valid_BS, positions_BT, valid_BS[:, None, :] & causal_TS[None]


def _new_token_logprobs(model: nnx.Module, state: DecodeState, h_BTD: jax.Array,
                        tokens_BT: jax.Array, mask_BT: jax.Array,
                        last_upto_BT: jax.Array, *, fresh: bool, score: bool,
                        max_logits: int) -> jax.Array:
  """float32[B, T]: log pi of each new token after the valid tokens before it.

  A token with a valid new token before it is scored from that token's hidden
  state; the first valid one of a row from state.logits_BV (0 when fresh). 0 on
  masked tokens and everywhere when not score. last_upto_BT: the index of the
  last valid new token at or before j, -1 if none (see extend).
  """
  b, t = tokens_BT.shape
  # Score from the source side: position i predicts the first valid token after
  # it, so only B x chunk x V logits exist at a time (token_stats).
  pos_T = jnp.arange(t)
  prev_BT = jnp.pad(last_upto_BT[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  rows_B1 = jnp.arange(b)[:, None]
  if t > 1 and score:
    first_from_BT = jax.lax.cummin(jnp.where(mask_BT, pos_T[None, :], t), axis=1,
                                   reverse=True)
    next_BT = jnp.pad(first_from_BT[:, 1:], ((0, 0), (0, 1)), constant_values=t)
    target_BT = tokens_BT[rows_B1, jnp.minimum(next_BT, t - 1)]
    source_lp_BT = token_stats(model, h_BTD, target_BT, max_logits=max_logits)['logp']
    in_chunk_BT = source_lp_BT[rows_B1, jnp.maximum(prev_BT, 0)]
  else:  # a decode step: its one token is scored from state.logits_BV below
    in_chunk_BT = jnp.zeros((b, t), jnp.float32)
  if fresh or not score:
    from_state_BT = jnp.zeros((b, t), jnp.float32)
  else:
    lse0_B = jax.nn.logsumexp(state.logits_BV, axis=-1)
    from_state_BT = state.logits_BV[rows_B1, tokens_BT] - lse0_B[:, None]
  logprob_BT = jnp.where(prev_BT >= 0, in_chunk_BT, from_state_BT)
  return jnp.where(mask_BT & score, logprob_BT, 0.0)


def extend(graphdef: nnx.GraphDef, params: nnx.State, state: DecodeState,
           tokens_BT: jax.Array, mask_BT: jax.Array, start: jax.Array | int,
           merge_first: bool = False, fresh: bool = False,
           max_logits: int = MAX_LOGITS, layers=None, score: bool = True
           ) -> DecodeState:
  """Writes T tokens at slots [start, start+T) in one forward (prefill or one step).

  mask_BT says which of them are real; any pattern is allowed. Each new token's
  log-prob under the logits of the valid token before it is recorded (the first
  one uses state.logits_BV; fresh (static): the state holds nothing yet, so it
  gets 0, and the empty state's constant logits are never folded by XLA).
  merge_first (static): the first token closes the previous turn (e.g.
  <end_of_turn>); drop it where the row's last token already equals it (the turn
  stopped on it), keep it elsewhere. max_logits (static): logits budget of one
  slice of positions (models.transformer.map_position_chunks). layers: the
  model's unstack_layers(), when called in a loop (see Transformer.hidden).
  score (static): False records 0 instead of the new tokens' log-probs and skips
  the vocabulary projection of every position but the last (a prompt or a
  correction chunk, whose log-probs a rollout never uses).
  """
  b, t = tokens_BT.shape
  tokens_BT = tokens_BT.astype(jnp.int32)
  mask_BT = mask_BT.astype(bool)
  if merge_first:
    mask_BT = mask_BT.at[:, 0].set(mask_BT[:, 0] & (tokens_BT[:, 0] != state.last_token_B))

  valid_BS, positions_BT, attn_mask_BTS = _attention_inputs(state, mask_BT, start)
  model = nnx.merge(graphdef, params)
  unstacked = {} if layers is None else {'layers': layers}
  h_BTD, cache = model.hidden(tokens_BT, positions_BT, attn_mask_BTS, state.cache, start,
                              **unstacked)
  idx_BT = jnp.where(mask_BT, jnp.arange(t)[None, :], -1)
  last_upto_BT = jax.lax.cummax(idx_BT, axis=1)          # last valid index <= j
  logprob_BT = _new_token_logprobs(model, state, h_BTD, tokens_BT, mask_BT,
                                   last_upto_BT, fresh=fresh, score=score,
                                   max_logits=max_logits)

  last_B = last_upto_BT[:, -1]
  any_B = last_B >= 0
  last_c_B = jnp.maximum(last_B, 0)
  rows_B = jnp.arange(b)
  last_logits_BV = model.logits(h_BTD[rows_B, last_c_B]).astype(jnp.float32)
  update = lambda old, new: jax.lax.dynamic_update_slice(old, new, (0, start))
  return DecodeState(
      cache=cache,
      tokens_BS=update(state.tokens_BS, tokens_BT),
      valid_BS=valid_BS,
      logprob_BS=update(state.logprob_BS, logprob_BT),
      dist_logprob_BS=update(state.dist_logprob_BS, jnp.zeros_like(logprob_BT)),
      next_pos_B=state.next_pos_B + jnp.sum(mask_BT, axis=1, dtype=jnp.int32),
      last_token_B=jnp.where(any_B, tokens_BT[rows_B, last_c_B], state.last_token_B),
      logits_BV=jnp.where(any_B[:, None], last_logits_BV, state.logits_BV))


def prefill(graphdef: nnx.GraphDef, params: nnx.State, tokens_BT: jax.Array,
            mask_BT: jax.Array, num_slots: int,
            max_logits: int = MAX_LOGITS, score: bool = True) -> DecodeState:
  """A fresh state of num_slots (static) slots with tokens_BT written at slot 0.

  score (static): also record the prompt tokens' log-probs (see extend).
  """
  state = init_state(graphdef, params, tokens_BT.shape[0], num_slots)
  return extend(graphdef, params, state, tokens_BT, mask_BT, 0, fresh=True,
                max_logits=max_logits, score=score)


def decode(graphdef: nnx.GraphDef, params: nnx.State, state: DecodeState,
           key: jax.Array, start: jax.Array | int, num_steps: jax.Array | int, *,
           temperature: float, top_k: int | None, top_p: float | None,
           stop_ids: Sequence[int], pad_id: int
           ) -> tuple[DecodeState, jax.Array, jax.Array]:
  """Samples up to num_steps tokens per row into slots [start, start+num_steps).

  Step i draws row b's token with key fold_in(fold_in(key, b), i) from the logits
  after its last valid token, writes it at slot start+i and runs the model on it.
  A row stops after sampling a token in stop_ids (that token is kept); rows with
  no valid slot at all (batch padding) never start. The loop ends when every row
  has stopped or num_steps is spent. start and num_steps may be traced; the rule
  (temperature, top_k, top_p), stop_ids and pad_id are static.

  Returns (state, length_B, stop_B): tokens generated per row (incl. the stop
  token) and why it ended: 0 = a stop token, 1 = the budget.
  """
  b = state.valid_BS.shape[0]
  keys_B = rules.row_keys(key, b)
  model = nnx.merge(graphdef, params)
  # Once, outside the loop (see Transformer.unstack_layers).
  layers = model.unstack_layers() if hasattr(model, 'unstack_layers') else None
  stop_K = jnp.asarray(tuple(stop_ids), jnp.int32).reshape(-1)

  def cond(carry):
    i, _, done_B, _, _ = carry
    return (i < num_steps) & ~jnp.all(done_B)

  def body(carry):
    i, state, done_B, len_B, hit_B = carry
    tok_B, dist_lp_B = rules.sample(rules.step_keys(keys_B, i), state.logits_BV,
                                    temperature, top_k, top_p)
    active_B = ~done_B
    tok_B = jnp.where(active_B, tok_B, pad_id)
    slot = start + i
    state = extend(graphdef, params, state, tok_B[:, None], active_B[:, None], slot,
                   layers=layers)
    dist_lp_B1 = jnp.where(active_B, dist_lp_B, 0.0)[:, None]
    state = state.replace(dist_logprob_BS=jax.lax.dynamic_update_slice(
        state.dist_logprob_BS, dist_lp_B1, (0, slot)))
    is_stop_B = active_B & jnp.any(tok_B[:, None] == stop_K[None, :], axis=-1)
    return (i + 1, state, done_B | is_stop_B, len_B + active_B.astype(jnp.int32),
            hit_B | is_stop_B)

  done_B = ~jnp.any(state.valid_BS, axis=1)
  zeros_B = jnp.zeros((b,), jnp.int32)
  carry = (jnp.asarray(0, jnp.int32), state, done_B, zeros_B, jnp.zeros((b,), bool))
  _, state, _, len_B, hit_B = jax.lax.while_loop(cond, body, carry)
  return state, len_B, jnp.where(hit_B, 0, 1).astype(jnp.int32)
