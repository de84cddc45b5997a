"""Preference tuning of Gemma 3 270M on MATH: online DPO from configs/gemma3_270m_math.py.

Same weights, task and evaluation as the SCoRe config; the schedule is one online
`dpo` stage (k samples per prompt, best vs worst by config.dpo.scorer). The judge
is the reference itself with the default English rubric (score = P("Yes") vs
P("No")), which a real tokenizer covers.

  python launch/dpo.py --config=configs/gemma3_270m_dpo.py --seeds=0 \\
      --methods=base,dpo_oracle,dpo_confidence,dpo_judge
"""
import importlib.util
import pathlib


def _math():
  path = pathlib.Path(__file__).with_name('gemma3_270m_math.py')
  spec = importlib.util.spec_from_file_location('configs_gemma3_270m_math', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  c = _math().get_config()
  c.workdir = 'runs/gemma3_270m_dpo'
  c.train.schedule = (('dpo', 100),)
  c.train.samples_per_prompt = 4   # confidence needs several samples to agree
  c.dpo.beta = 0.1
  c.dpo.scorer = 'confidence'
  c.dpo.judge.batch_size = 16
  return c
