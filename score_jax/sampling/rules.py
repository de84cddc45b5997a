"""Sampling rules: greedy, temperature, top-k and top-p, as pure functions of logits.

Order (our choice, the usual one): divide by the temperature, keep the top_k
largest logits, then keep the nucleus of that renormalised distribution: the
smallest prefix of the tokens sorted by probability whose mass reaches top_p
(a token is kept when the mass strictly before it is < top_p; ties in the top-k
cut are broken towards the lower token id, as jax.lax.top_k does).
Temperature 0 is greedy: argmax of the raw logits, top_k / top_p ignored.

Every row draws with its own key, so a row's sample does not depend on the
batch it sits in.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def check_rule(temperature: float, top_k: int | None, top_p: float | None) -> None:
  """Raises ValueError for a rule outside its domain."""
  if not temperature >= 0.0:
    raise ValueError(f'sampling: temperature={temperature}; expected >= 0 (0: greedy)')
  if top_k is not None and (int(top_k) != top_k or top_k < 1):
    raise ValueError(f'sampling: top_k={top_k}; expected an int >= 1 or None')
  if top_p is not None and not 0.0 < top_p <= 1.0:
    raise ValueError(f'sampling: top_p={top_p}; expected 0 < top_p <= 1 or None')


def candidates(logits_BV: jax.Array, temperature: float, top_k: int | None,
               top_p: float | None) -> tuple[jax.Array, jax.Array | None]:
  """The logits of the distribution a rule draws from, over its candidate tokens.

  Returns (cand_logits_BK, cand_ids_BK): temperature-scaled float32 logits, -inf
  for tokens outside the nucleus, and the token id of each candidate. Without
  top_k / top_p the candidates are the whole vocabulary and cand_ids is None
  (candidate k is token k). Requires temperature > 0.
  """
  x_BV = logits_BV.astype(jnp.float32) / temperature
  if top_k is None and top_p is None:
    return x_BV, None
  k = min(top_k or x_BV.shape[-1], x_BV.shape[-1])
  vals_BK, ids_BK = jax.lax.top_k(x_BV, k)   # sorted, largest first
  if top_p is not None and top_p < 1.0:
    probs_BK = jax.nn.softmax(vals_BK, axis=-1)
    mass_before_BK = jnp.cumsum(probs_BK, axis=-1) - probs_BK
    keep_BK = mass_before_BK < top_p
    keep_BK = keep_BK.at[:, 0].set(True)   # rounding must never empty the nucleus
    vals_BK = jnp.where(keep_BK, vals_BK, -jnp.inf)
  return vals_BK, ids_BK


def sample(keys_B: jax.Array, logits_BV: jax.Array, temperature: float,
           top_k: int | None = None, top_p: float | None = None
           ) -> tuple[jax.Array, jax.Array]:
  """Draws one token per row; returns (tokens_B int32, dist_logprob_B float32).

  dist_logprob_B is the log-probability of the drawn token under the distribution
  actually sampled from (after temperature / top-k / top-p); 0 for greedy.
  keys_B: one PRNG key per row. temperature, top_k, top_p are static.
  """
  b = logits_BV.shape[0]
  if temperature == 0.0:
    return (jnp.argmax(logits_BV, axis=-1).astype(jnp.int32),
            jnp.zeros((b,), jnp.float32))
  cand_BK, ids_BK = candidates(logits_BV, temperature, top_k, top_p)
  idx_B = jax.vmap(jax.random.categorical)(keys_B, cand_BK)
  dist_logprob_B = jnp.take_along_axis(jax.nn.log_softmax(cand_BK, axis=-1),
                                       idx_B[:, None], axis=-1)[:, 0]
  if ids_BK is None:
    tokens_B = idx_B
  else:
    tokens_B = jnp.take_along_axis(ids_BK, idx_B[:, None], axis=-1)[:, 0]
  return tokens_B.astype(jnp.int32), dist_logprob_B


def row_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """One key per row: fold_in(key, row)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch_size))


def step_keys(keys_B: jax.Array, step: jax.Array | int) -> jax.Array:
  """The keys of one decode step: fold_in(row key, step)."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_B, step)
