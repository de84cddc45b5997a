"""RLAIF's AI labeller (Lee et al. 2023): a model asked a fixed rubric, scored by P("Yes").

The judge is any model of the run's family, by default the frozen reference
itself. Pointwise, it reads the rubric prompt (config.dpo.judge.template, with
{question} and {response}) in the task's prompt layout and its score is
P(yes) / (P(yes) + P(no)) over the first tokens of the two verdict words at the
start of its answer. Pairwise, it reads both responses (pairwise_template, with
{question}, {first}, {second}) and is asked which is better; each pair is shown
in both orders and the two verdicts averaged, which removes position bias:
prefer(a, b) + prefer(b, a) = 1 exactly.
`JudgeRewardTask` makes the judge's score the reward of the REINFORCE / SCoRe
trainer (RLAIF with the judge as the reward, no reward model).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax.models.transformer import causal_mask


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """The rubric (config.dpo.judge). Verdict words must start with different tokens."""
  template: str = ('Question: {question}\nProposed answer: {response}\n'
                   'Is the proposed answer correct? Answer Yes or No.')
  yes: str = 'Yes'
  no: str = 'No'
  pairwise_template: str = ('Question: {question}\nAnswer 1: {first}\nAnswer 2: {second}\n'
                            'Which answer is correct? Answer 1 or 2.')
  first: str = '1'
  second: str = '2'
  batch_size: int = 256


def _last_logprobs(graphdef, params, tokens_BT, valid_BT):
  """log softmax of the next-token logits after each row's last valid token."""
  b, t = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  model = nnx.merge(graphdef, params)
  h_BTD, _ = model.hidden(tokens_BT, positions_BT, causal_mask(positions_BT, valid_BT))
  last_B = jnp.maximum(jnp.sum(valid_BT, axis=1) - 1, 0)
  h_BD = h_BTD[jnp.arange(b), last_B]
  return jax.nn.log_softmax(model.logits(h_BD).astype(jnp.float32), axis=-1)


class Judge:
  """A frozen model answering a rubric; params from Experiment.for_sampling.

  prompt_ids: rubric text -> prompt token ids (default: the tokenizer's chat layout;
  an Experiment passes its task's prompt format).
  """

  def __init__(self, graphdef: nnx.GraphDef, params: nnx.State, tokenizer,
               cfg: JudgeConfig = JudgeConfig(),
               prompt_ids: Callable[[str], list[int]] | None = None):
    self.params = params
    self.tokenizer = tokenizer
    self.cfg = cfg
    self.prompt_ids = prompt_ids or tokenizer.chat_prompt_ids
    self._fn = jax.jit(functools.partial(_last_logprobs, graphdef))
    self.verdict_ids = self._verdicts(cfg.yes, cfg.no, 'yes', 'no')
    self.pair_ids = self._verdicts(cfg.first, cfg.second, 'first', 'second')

  def _verdicts(self, a: str, b: str, name_a: str, name_b: str) -> tuple[int, int]:
    ids = []
    for word, name in ((a, name_a), (b, name_b)):
      toks = self.tokenizer.encode(word)
      if not toks or toks[0] == self.tokenizer.unk_id:
        raise ValueError(f'config.dpo.judge.{name}={word!r}: the tokenizer has no piece '
                         'for it; pick a verdict word the tokenizer covers')
      ids.append(toks[0])
    if ids[0] == ids[1]:
      raise ValueError(f'config.dpo.judge.{name_a}/{name_b}: {a!r} and {b!r} start with '
                       'the same token; expected verdicts that differ in their first token')
    return ids[0], ids[1]

  def verdict_probability(self, prompts: Sequence[str], ids: tuple[int, int]) -> np.ndarray:
    """P(ids[0]) / (P(ids[0]) + P(ids[1])) as the judge's first answer token."""
    rows = [self.prompt_ids(p) for p in prompts]
    width = -(-max(len(r) for r in rows) // 16) * 16   # few shapes, few compiles
    n, bs = len(rows), self.cfg.batch_size
    out = np.zeros(n, np.float32)
    for s in range(0, n, bs):
      chunk = rows[s:s + bs]
      tokens = np.full((bs, width), self.tokenizer.pad_id, np.int32)
      valid = np.zeros((bs, width), bool)
      for i, r in enumerate(chunk):
        tokens[i, :len(r)], valid[i, :len(r)] = r, True
      valid[len(chunk):, 0] = True     # padding rows: one token, ignored
      logp_BV = np.asarray(self._fn(self.params, tokens, valid))[:len(chunk)]
      pair = logp_BV[:, list(ids)]
      out[s:s + len(chunk)] = np.exp(pair[:, 0] - np.logaddexp(pair[:, 0], pair[:, 1]))
    return out

  def yes_probability(self, questions: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    prompts = [self.cfg.template.format(question=q, response=r)
               for q, r in zip(questions, responses)]
    return self.verdict_probability(prompts, self.verdict_ids)

  def prefer(self, questions: Sequence[str], a: Sequence[str],
             b: Sequence[str]) -> np.ndarray:
    """P(a better than b), averaged over both presentation orders."""
    fmt = lambda q, x, y: self.cfg.pairwise_template.format(question=q, first=x, second=y)
    ab = [fmt(q, x, y) for q, x, y in zip(questions, a, b)]
    ba = [fmt(q, y, x) for q, x, y in zip(questions, a, b)]
    p = self.verdict_probability(ab + ba, self.pair_ids)
    return 0.5 * (p[:len(ab)] + (1.0 - p[len(ab):]))

  def round_robin(self, questions: Sequence[str], responses: Sequence[str],
                  k: int) -> np.ndarray:
    """Per response: mean preference for it over each other sample of its prompt."""
    i, j = np.triu_indices(k, 1)
    groups = range(0, len(responses), k)
    qs = [questions[g + a] for g in groups for a in i]
    a = [responses[g + x] for g in groups for x in i]
    b = [responses[g + y] for g in groups for y in j]
    p_Gm = self.prefer(qs, a, b).reshape(len(groups), len(i))
    wins_Gk = np.zeros((len(groups), k), np.float32)
    np.add.at(wins_Gk, (slice(None), i), p_Gm)
    np.add.at(wins_Gk, (slice(None), j), 1.0 - p_Gm)
    return (wins_Gk / (k - 1)).reshape(-1)


@dataclasses.dataclass(frozen=True)
class JudgeRewardTask:
  """A task whose reward is the judge's P(yes) (RLAIF); everything else is `task`'s."""
  task: Any
  judge: Judge

  def rewards(self, examples: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
    questions = [self.task.first_turn_prompt(e) for e in examples]
    return self.judge.yes_probability(questions, responses)

  def reward(self, example: Any, response: str) -> float:
    return float(self.rewards([example], [response])[0])

  def __getattr__(self, name: str):
    return getattr(self.task, name)
