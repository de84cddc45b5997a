"""DPO, FactTune-confidence pairs and an RLAIF judge on the embedded tiny task.

Same task, model and base model (base_sft; = reference) as configs/tiny.py; the
schedule is one online `dpo` stage: each step samples k = 8 two-turn episodes per
prompt from the policy, scores them (config.dpo.scorer: oracle | confidence |
judge | judge_pairwise), and takes a DPO step on the best vs the worst.
launch/dpo.py runs every scorer (and SCoRe) from the same base per seed.

The tiny tokenizer knows only the task's characters, so the judge's rubric here
is built from them: the question and the proposed answer in one user turn,
verdict '1' (yes) vs '0' (no); the pairwise rubric shows both answers and asks
for '1' or '2'. The tiny reference never saw such a prompt, so this judge is
what an untrained labeller gives: launch/dpo.py measures its pair accuracy.
"""
import importlib.util
import pathlib


def _tiny():
  path = pathlib.Path(__file__).with_name('tiny.py')
  spec = importlib.util.spec_from_file_location('configs_tiny', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  c = _tiny().get_config()
  c.workdir = 'runs/tiny_dpo'
  c.train.schedule = (('dpo', 50),)
  c.optim.learning_rate = 5e-4
  c.dpo.beta = 0.1
  c.dpo.label_smoothing = 0.0
  c.dpo.loss_type = 'sigmoid'
  c.dpo.scorer = 'confidence'
  c.dpo.judge.template = '{question}{response}'
  c.dpo.judge.yes = '1'
  c.dpo.judge.no = '0'
  c.dpo.judge.pairwise_template = '{question}{first}+{second}='
  c.dpo.judge.first = '1'
  c.dpo.judge.second = '2'
  c.eval.temperatures = (0.0,)
  return c
