"""Online preference pairs for the trainer's `dpo` stage.

Each step the trainer samples k two-turn episodes per prompt from the policy (as
for SCoRe); `OnlinePairs.batch` scores them with config.dpo.scorer, pairs each
prompt's best with its worst, and reports how those choices agree with the task's
true reward (which the oracle scorer uses, and the others never see).
"""
from __future__ import annotations

import numpy as np

from score_jax import config as config_lib
from score_jax.batches import PairBatch, PromptBatch
from score_jax.preference import data as data_lib
from score_jax.preference import judge as judge_lib
from score_jax.preference import scorers as scorers_lib
from score_jax.training.attempts import Attempts


def make_judge(exp, params) -> judge_lib.Judge:
  """config.dpo.judge's rubric, answered by a model with `params` (e.g. the reference)."""
  return judge_lib.Judge(exp.graphdef, exp.for_sampling(params), exp.tokenizer,
                         config_lib.judge_config(exp.cfg),
                         lambda text: exp.prompt_format.prompt_ids(exp.tokenizer, text))


class OnlinePairs:
  """Scores each prompt's attempts and turns them into a DPO batch; judge = reference."""

  def __init__(self, exp, ref_params):
    self.loss_cfg = config_lib.dpo_config(exp.cfg)
    name = exp.cfg.dpo.scorer
    judge = make_judge(exp, ref_params) if name.startswith('judge') else None
    self.scorer = scorers_lib.make_scorer(name, exp, judge)

  def batch(self, attempts: Attempts, prompts: PromptBatch, examples,
            k: int) -> tuple[PairBatch, dict]:
    """(DPO batch, metrics) from the attempts at `prompts`, k samples each."""
    index = np.repeat(np.asarray(prompts.index_B), k)
    scores = np.asarray(self.scorer(attempts, [examples[i] for i in index], k), np.float32)
    oracle = attempts.r1_B.astype(np.float32) + attempts.r2_B.astype(np.float32)
    dpo_batch, chosen, rejected = data_lib.online_batch(attempts.score_batch(), scores, k)
    w = dpo_batch.weight_B[:len(chosen)]
    kept = max(float(w.sum()), 1.0)
    stats = {'dpo/pairs_kept': float(w.mean()),
             'dpo/chosen_oracle': float((w * oracle[chosen]).sum() / kept),
             'dpo/rejected_oracle': float((w * oracle[rejected]).sum() / kept),
             'dpo/pair_oracle_agreement': float(
                 (w * (oracle[chosen] > oracle[rejected])).sum() / kept)}
    acc = scorers_lib.pair_accuracy(scores, oracle, k)['pair_accuracy']
    stats['dpo/scorer_pair_accuracy'] = acc if np.isfinite(acc) else 0.5
    return dpo_batch, stats
