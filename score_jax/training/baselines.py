"""The paper's baselines on the same task: STaR and Pair-SFT (Self-Refine is untrained).

Both sample from the base model on training problems, build correction traces
offline, and fine-tune with the SFT loss on y2 (training/base_sft.py packs them).
- STaR (Zelikman et al.; the paper's D+ variant with keep_right_right): keep the
  base model's two-attempt traces that go wrong -> right (and right -> right),
  SFT, and iterate with the fine-tuned model as the sampler.
- Pair-SFT (Welleck et al.'s "self-correct" data, as the paper builds it): for each
  problem pair one wrong and one right first attempt of the base model as a
  synthetic y1 -> y2 correction, SFT once.
Too few traces for one SFT batch raise TooLittleData: a baseline that trained
nothing must never be reported under its name.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from score_jax.errors import UserError
from score_jax.training import base_sft as base_sft_lib
from score_jax.training.experiment import Experiment
from score_jax.training.trainer import train_sft


class TooLittleData(UserError):
  """A baseline's sampled data is smaller than one SFT batch: nothing was trained."""


def _enough(name: str, n: int, batch_size: int, num_problems: int, samples: int):
  if n < batch_size:
    raise TooLittleData(
        f'{name}: {n} training traces from {num_problems} problems x {samples} samples, '
        f'fewer than one SFT batch ({batch_size}); sample more problems or a smaller batch')


def _sample_train(exp: Experiment, params, num_problems: int, samples: int, seed: int,
                  temperature: float = 1.0):
  """Two-attempt rollouts of `samples` per problem on the first training problems."""
  examples = exp.task.load_examples('train')[:num_problems]
  questions = [exp.task.first_turn_prompt(e) for e in examples]
  out = {'index': [], 'r1': [], 'r2': [], 'y1': [], 'y2': []}
  key = jax.random.key(seed)
  pipe = exp.pipeline(examples, exp.cfg.data.batch_size, seed=seed, train=False)
  sample_params = exp.for_sampling(params)
  attempts = exp.two_attempts(temperature)
  for i, prompts in enumerate(pipe):
    prompts = prompts.repeat(samples)
    at = attempts(sample_params, prompts, examples, jax.random.fold_in(key, i))
    keep = at.real_B
    out['index'] += np.asarray(prompts.index_B)[keep].tolist()
    out['r1'] += at.r1_B[keep].tolist()
    out['r2'] += at.r2_B[keep].tolist()
    out['y1'] += [y for y, k in zip(at.y1_ids, keep) if k]
    out['y2'] += [y for y, k in zip(at.y2_ids, keep) if k]
  return questions, {k: (np.asarray(v) if k in ('index', 'r1', 'r2') else v)
                     for k, v in out.items()}


def star(exp: Experiment, base: nnx.State, *, iterations: int, num_problems: int,
         samples: int, steps: int, batch_size: int, learning_rate: float, seed: int,
         keep_right_right: bool = True) -> tuple[nnx.State, dict]:
  params, stats = base, {}
  for it in range(iterations):
    questions, s = _sample_train(exp, params, num_problems, samples, seed + 100 * it)
    qs = [questions[i] for i in s['index']]
    traces, target = base_sft_lib.star_data(s['r1'], s['r2'], s['y1'], s['y2'], qs, exp,
                                          keep_right_right)
    n = int(np.asarray(traces.tokens_BT).shape[0])
    stats[f'iter{it}_kept'] = n
    if it > 0 and n < batch_size:
      break   # the previous iteration's model stands; stats say how many ran
    _enough('STaR', n, batch_size, num_problems, samples)
    stats['iterations'] = it + 1
    # Each iteration fine-tunes the base model on the latest filtered data (STaR).
    params = train_sft(exp, base, traces, target, steps=steps, batch_size=batch_size,
                       learning_rate=learning_rate, seed=seed + it, phase=f'star{it}')
  return params, stats


def pair_sft(exp: Experiment, base: nnx.State, *, num_problems: int, samples: int,
             steps: int, batch_size: int, learning_rate: float,
             seed: int) -> tuple[nnx.State, dict]:
  questions, s = _sample_train(exp, base, num_problems, samples, seed)
  by_problem: dict[int, tuple[list, list]] = {}
  for i, r, y in zip(s['index'], s['r1'], s['y1']):
    wrong, right = by_problem.setdefault(int(i), ([], []))
    (right if r == 1 else wrong).append(y)
  traces, target = base_sft_lib.pair_sft_data(by_problem, questions, exp, seed)
  n = int(np.asarray(traces.tokens_BT).shape[0])
  _enough('Pair-SFT', n, batch_size, num_problems, samples)
  stats = {'pairs': n}
  return train_sft(exp, base, traces, target, steps=steps, batch_size=batch_size,
                   learning_rate=learning_rate, seed=seed, phase='pair_sft'), stats
