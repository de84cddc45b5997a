"""The textbook log-probs from full B x T x V logits: the tests' independent reference.

score_jax scores tokens from hidden states a slice at a time
(models.transformer.token_stats); these helpers build every logit at once.
"""
import jax
import jax.numpy as jnp

from score_jax import losses


def next_token_log_probs(logits_BTV: jax.Array, tokens_BT: jax.Array) -> jax.Array:
  """logp_BT[:, t] = log p(tokens[t] | tokens[<t]) from logits at t-1; 0 at t=0."""
  logp_BT = losses.token_log_probs(logits_BTV[:, :-1], tokens_BT[:, 1:])
  return jnp.pad(logp_BT, ((0, 0), (1, 0)))


def shift_logits(logits_BTV: jax.Array) -> jax.Array:
  """Aligns logits with the token they predict (index t holds logits from t-1)."""
  return jnp.pad(logits_BTV[:, :-1], ((0, 0), (1, 0), (0, 0)))
