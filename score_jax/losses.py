"""SCoRe objectives as pure functions of arrays: no model, no state.

Inputs are per-token arrays over one packed trace [x, y1, p, y2] (see
score_jax.sampling.trace.CorrectionTrace): `logp_BT[b, t]` is the policy's
log-prob of token t given tokens < t, masks select y1's and y2's tokens, and
rewards are per row (binary, from the task).

Where the paper (Kumar et al. 2024, arXiv 2409.12917) is silent the choice is
ours and a `LossConfig` field: the KL estimator, whether the KL enters as a loss
term or is folded into the reward, the advantage baseline, length normalisation,
and whether y1's tokens also see y2's reward.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

KL_ESTIMATORS = ('exact', 'k1', 'k3')
BASELINES = ('none', 'batch_mean', 'loo')
NORMALIZATIONS = ('sequence', 'token')


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Hyperparameters of the SCoRe objectives (paper defaults for MATH).

  beta1: KL weight on every attempt (paper: 0.01).
  beta2: Stage I KL weight on the first attempt; None means 10 * beta1 (paper).
  alpha: Stage II shaping bonus alpha * (r2 - r1) on y2's reward (paper: 10).
  kl_estimator: 'exact' (sum over the vocabulary from both sets of logits),
    'k1' (log p - log q of the sampled token) or 'k3' (q/p - 1 - log q/p).
    Our choice; the paper does not say.
  kl_in_reward: fold the (stop-gradient) sequence KL into the reward that
    REINFORCE sees, instead of a differentiable loss term. With 'k1' this is the
    textbook KL-regularised policy gradient; 'exact'/'k3' are usually used as
    loss terms. Our choice.
  baseline: 'loo' (leave-one-out over the k samples of a prompt, the default),
    'batch_mean', or 'none'. Our choice; the paper says only "REINFORCE".
  samples_per_prompt: k; rows b*k .. b*k+k-1 share one prompt. A run's config
    reads both defaults from here (config.train.samples_per_prompt).
  normalize: 'sequence' (sum over a turn's tokens, mean over rows) or 'token'
    (mean over all scored tokens of the batch). Our choice.
  credit_y1_with_y2: if True, y1's log-prob is also weighted by y2's (shaped)
    reward (Stage I: by A(r2); Stage II: by A(r1 + r2_hat)), i.e. the return of
    the whole episode. Default False: each attempt is credited with its own
    reward, so in Stage I y1's tokens get gradient only from the KL.
  """
  beta1: float = 0.01
  beta2: float | None = None
  alpha: float = 10.0
  kl_estimator: str = 'exact'
  kl_in_reward: bool = False
  baseline: str = 'loo'
  samples_per_prompt: int = 4
  normalize: str = 'sequence'
  credit_y1_with_y2: bool = False

  def __post_init__(self):
    for field, allowed in (('kl_estimator', KL_ESTIMATORS), ('baseline', BASELINES),
                           ('normalize', NORMALIZATIONS)):
      if getattr(self, field) not in allowed:
        raise ValueError(f'LossConfig.{field}={getattr(self, field)!r}; expected one of {allowed}')
    for field in ('alpha', 'beta1', 'beta2'):
      value = getattr(self, field)
      if value is not None and not value >= 0:   # also refuses NaN
        raise ValueError(f'LossConfig.{field}={value!r}; expected >= 0')
    if self.baseline == 'loo' and self.samples_per_prompt < 2:
      raise ValueError('LossConfig.baseline=loo needs samples_per_prompt >= 2 '
                       f'(got {self.samples_per_prompt}); use batch_mean or none')

  @property
  def stage_one_beta(self) -> float:
    return 10.0 * self.beta1 if self.beta2 is None else self.beta2


# ----------------------------------------------------------------------------- log-probs


def token_log_probs(logits_BTV: jax.Array, targets_BT: jax.Array,
                    mask_BT: jax.Array | None = None) -> jax.Array:
  """log softmax(logits)[target] per position, in float32; 0 where mask is False."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  logp_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return logp_BT if mask_BT is None else jnp.where(mask_BT, logp_BT, 0.0)


# ----------------------------------------------------------------------------- KL


def kl_exact(logits_BTV: jax.Array, ref_logits_BTV: jax.Array) -> jax.Array:
  """KL(pi || pi_ref) per position, summed over the vocabulary."""
  logp = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  logq = jax.nn.log_softmax(ref_logits_BTV.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def kl_sampled(logp_BT: jax.Array, ref_logp_BT: jax.Array, estimator: str) -> jax.Array:
  """Single-sample KL estimators at the sampled tokens (Schulman's k1 and k3)."""
  log_ratio = ref_logp_BT - logp_BT            # log q/p
  if estimator == 'k1':
    return -log_ratio
  if estimator == 'k3':
    return jnp.exp(log_ratio) - 1.0 - log_ratio
  raise ValueError(f'kl estimator {estimator!r}; expected k1 or k3 (exact needs logits)')


def kl_per_token(cfg: LossConfig, logp_BT, ref_logp_BT, logits_BTV=None,
                 ref_logits_BTV=None) -> jax.Array:
  """The configured KL estimate per token; logits must be aligned like logp."""
  if cfg.kl_estimator == 'exact':
    if logits_BTV is None or ref_logits_BTV is None:
      raise ValueError("kl_estimator='exact' needs policy and reference logits")
    return kl_exact(logits_BTV, ref_logits_BTV)
  return kl_sampled(logp_BT, ref_logp_BT, cfg.kl_estimator)


# ----------------------------------------------------------------------------- REINFORCE


def advantages(rewards_B: jax.Array, baseline: str, samples_per_prompt: int = 1) -> jax.Array:
  """Reward minus a baseline; never differentiated (rewards come from the host)."""
  r = jax.lax.stop_gradient(rewards_B.astype(jnp.float32))
  if baseline == 'none':
    return r
  if baseline == 'batch_mean':
    return r - jnp.mean(r)
  if baseline == 'loo':
    k = samples_per_prompt
    r_Gk = r.reshape(-1, k)
    others_mean = (jnp.sum(r_Gk, axis=1, keepdims=True) - r_Gk) / (k - 1)
    return (r_Gk - others_mean).reshape(-1)
  raise ValueError(f'baseline {baseline!r}; expected one of {BASELINES}')


def _masked_total(x_BT, mask_BT, cfg: LossConfig, num_rows_tokens):
  """Sum over a turn's tokens, then normalised per `cfg.normalize`."""
  per_row = jnp.sum(jnp.where(mask_BT, x_BT, 0.0), axis=1)
  if cfg.normalize == 'sequence':
    return jnp.mean(per_row)
  return jnp.sum(per_row) / jnp.maximum(num_rows_tokens, 1.0)


def reinforce_term(logp_BT, mask_BT, adv_B, cfg: LossConfig, num_tokens):
  """-E[A * log pi(turn)]: its gradient is the score-function estimator."""
  return -_masked_total(logp_BT * adv_B[:, None], mask_BT, cfg, num_tokens)


def _sequence_kl(kl_BT, mask_BT):
  return jnp.sum(jnp.where(mask_BT, kl_BT, 0.0), axis=1)


def _turn_stats(prefix, kl_BT, mask_BT, rewards_B, adv_B):
  seq_kl = _sequence_kl(kl_BT, mask_BT)
  return {f'{prefix}/reward': jnp.mean(rewards_B), f'{prefix}/kl': jnp.mean(seq_kl),
          f'{prefix}/advantage_abs': jnp.mean(jnp.abs(adv_B)),
          f'{prefix}/length': jnp.mean(jnp.sum(mask_BT, axis=1).astype(jnp.float32))}


def _score_objective(logp_BT, kl_BT, y1_mask_BT, y2_mask_BT, returns1_B, returns2_B,
                     kl1_weight, kl2_weight, cfg: LossConfig):
  """Shared body of both stages: REINFORCE on each turn's return plus weighted KL."""
  num_tokens = jnp.sum(y1_mask_BT) + jnp.sum(y2_mask_BT)
  if cfg.kl_in_reward:
    sg_kl = jax.lax.stop_gradient(kl_BT)
    returns1_B = returns1_B - kl1_weight * _sequence_kl(sg_kl, y1_mask_BT)
    returns2_B = returns2_B - kl2_weight * _sequence_kl(sg_kl, y2_mask_BT)
  adv1_B = advantages(returns1_B, cfg.baseline, cfg.samples_per_prompt)
  adv2_B = advantages(returns2_B, cfg.baseline, cfg.samples_per_prompt)
  pg1 = reinforce_term(logp_BT, y1_mask_BT, adv1_B, cfg, num_tokens)
  pg2 = reinforce_term(logp_BT, y2_mask_BT, adv2_B, cfg, num_tokens)
  if cfg.kl_in_reward:
    kl_loss = jnp.zeros((), jnp.float32)
  else:
    kl_loss = (kl1_weight * _masked_total(kl_BT, y1_mask_BT, cfg, num_tokens)
               + kl2_weight * _masked_total(kl_BT, y2_mask_BT, cfg, num_tokens))
  loss = pg1 + pg2 + kl_loss
  return loss, adv1_B, adv2_B, {'loss': loss, 'pg_loss': pg1 + pg2, 'kl_loss': kl_loss}


def stage_one_loss(logp_BT, kl_BT, y1_mask_BT, y2_mask_BT, r1_B, r2_B, cfg: LossConfig):
  """Stage I: reward y2 only; beta2 * KL on y1's tokens, beta1 * KL on y2's.

  maximise E[r(y2)] - beta2 KL(pi(.|x) || ref) - beta1 KL(pi(.|x2) || ref).
  Unless cfg.credit_y1_with_y2, y1's tokens get gradient only from the KL.
  """
  zeros = jnp.zeros_like(r2_B, jnp.float32)
  returns1 = r2_B.astype(jnp.float32) if cfg.credit_y1_with_y2 else zeros
  loss, adv1, adv2, metrics = _score_objective(
      logp_BT, kl_BT, y1_mask_BT, y2_mask_BT, returns1, r2_B.astype(jnp.float32),
      cfg.stage_one_beta, cfg.beta1, cfg)
  metrics |= _turn_stats('y1', kl_BT, y1_mask_BT, r1_B, adv1)
  metrics |= _turn_stats('y2', kl_BT, y2_mask_BT, r2_B, adv2)
  return loss, metrics


def shaped_rewards(r1_B, r2_B, alpha: float):
  """Stage II rewards: r1, and r2 + alpha * (r2 - r1) (the self-correction bonus)."""
  r1 = r1_B.astype(jnp.float32)
  r2 = r2_B.astype(jnp.float32)
  return r1, r2 + alpha * (r2 - r1)


def stage_two_loss(logp_BT, kl_BT, y1_mask_BT, y2_mask_BT, r1_B, r2_B, cfg: LossConfig):
  """Stage II: reward both turns, y2's shaped by alpha * (r2 - r1); beta1 KL on both."""
  r1_hat, r2_hat = shaped_rewards(r1_B, r2_B, cfg.alpha)
  returns1 = r1_hat + r2_hat if cfg.credit_y1_with_y2 else r1_hat
  loss, adv1, adv2, metrics = _score_objective(
      logp_BT, kl_BT, y1_mask_BT, y2_mask_BT, returns1, r2_hat, cfg.beta1, cfg.beta1, cfg)
  metrics |= _turn_stats('y1', kl_BT, y1_mask_BT, r1_B, adv1)
  metrics |= _turn_stats('y2', kl_BT, y2_mask_BT, r2_B, adv2)
  metrics['y2/shaped_reward'] = jnp.mean(r2_hat)
  return loss, metrics


def sft_loss(logp_BT: jax.Array, target_mask_BT: jax.Array):
  """Negative log-likelihood per target token (STaR, Pair-SFT, base_sft)."""
  n = jnp.maximum(jnp.sum(target_mask_BT), 1)
  nll = -jnp.sum(jnp.where(target_mask_BT, logp_BT, 0.0)) / n
  return nll, {'loss': nll, 'sft/nll': nll, 'sft/tokens': n.astype(jnp.float32)}


# ----------------------------------------------------------------------------- DPO

DPO_LOSS_TYPES = ('sigmoid', 'ipo')


def dpo_loss(policy_chosen_B: jax.Array, policy_rejected_B: jax.Array,
             ref_chosen_B: jax.Array, ref_rejected_B: jax.Array, beta: float, *,
             label_smoothing: float = 0.0, loss_type: str = 'sigmoid',
             weights_B: jax.Array | None = None):
  """Direct Preference Optimization (Rafailov et al. 2023) on sequence log-probs.

  h = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r)). 'sigmoid' (DPO, with
  the conservative label smoothing eps of cDPO):
    -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h);
  'ipo' (Azar et al. 2023): (h - 1 / (2 beta))^2. beta multiplies h once (a
  peer implementation scales h by beta and then again inside the sigmoid).
  weights_B (optional, >= 0): a weighted mean over pairs; weight 0 drops a pair
  (e.g. a prompt whose samples all scored the same).
  Returns (loss, metrics): reward accuracy, chosen / rejected implicit rewards
  beta * (log pi - log ref), and their margin.
  """
  if loss_type not in DPO_LOSS_TYPES:
    raise ValueError(f'dpo loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}')
  f32 = lambda x: x.astype(jnp.float32)
  chosen_logratio_B = f32(policy_chosen_B) - jax.lax.stop_gradient(f32(ref_chosen_B))
  rejected_logratio_B = f32(policy_rejected_B) - jax.lax.stop_gradient(f32(ref_rejected_B))
  h_B = chosen_logratio_B - rejected_logratio_B
  if loss_type == 'sigmoid':
    per_pair_B = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h_B)
                  - label_smoothing * jax.nn.log_sigmoid(-beta * h_B))
  else:
    per_pair_B = (h_B - 1.0 / (2.0 * beta)) ** 2
  w_B = jnp.ones_like(h_B) if weights_B is None else f32(weights_B)
  mean = lambda x_B: jnp.sum(w_B * x_B) / jnp.maximum(jnp.sum(w_B), 1e-8)
  loss = mean(per_pair_B)
  chosen_B = jax.lax.stop_gradient(beta * chosen_logratio_B)
  rejected_B = jax.lax.stop_gradient(beta * rejected_logratio_B)
  metrics = {'loss': loss, 'dpo/reward_accuracy': mean((chosen_B > rejected_B).astype(jnp.float32)),
             'dpo/chosen_reward': mean(chosen_B), 'dpo/rejected_reward': mean(rejected_B),
             'dpo/margin': mean(chosen_B - rejected_B), 'dpo/pairs': jnp.sum(w_B)}
  return loss, metrics


@dataclasses.dataclass(frozen=True)
class DPOConfig:
  """Hyperparameters of the `dpo` stage (config.dpo): see dpo_loss."""
  beta: float = 0.1
  label_smoothing: float = 0.0
  loss_type: str = 'sigmoid'

  def __post_init__(self):
    if self.loss_type not in DPO_LOSS_TYPES:
      raise ValueError(f'DPOConfig.loss_type={self.loss_type!r}; expected one of '
                       f'{DPO_LOSS_TYPES}')
    if self.beta <= 0:
      raise ValueError(f'DPOConfig.beta={self.beta}; expected > 0')
    if not 0.0 <= self.label_smoothing < 0.5:
      raise ValueError(f'DPOConfig.label_smoothing={self.label_smoothing}; expected '
                       'in [0, 0.5)')
