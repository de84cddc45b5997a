"""README "Use it as a library": its code block runs here, verbatim, and must work.

Acc@t2 is measured by the README's own reward function on the decoded second
attempts, not by the trainer's metrics.
"""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def library_block() -> str:
  text = README.read_text()
  section = text[text.index('## Use it as a library'):]
  section = section[:section.index('\n## ', 1)]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_readme_block_is_short():
  section = README.read_text().split('## Use it as a library')[1].split('\n## ')[0]
  assert len(library_block().splitlines()) <= 25
  assert len(section.strip().splitlines()) <= 40


def test_readme_library_example_improves_acc_t2(tmp_path, monkeypatch):
  monkeypatch.chdir(README.parent)   # the block loads configs/tiny.py
  ns = {'workdir': str(tmp_path)}
  exec(compile(library_block(), 'README.md', 'exec'), ns)  # pylint: disable=exec-used
  before, after, result = ns['before'], ns['after'], ns['result']
  print(f'Acc@t2 before {before:.3f} after {after:.3f}')
  assert result.steps == 40
  assert after >= before + 0.25
  # The loop's own reward (the task's reward_fn via Task.reward) agrees with the README's.
  turns = ns['score_jax'].sample(ns['exp'], result.params, temperature=1.0)
  assert [t.r2 for t in turns] == [ns['reward'](t.problem.value, t.y2) for t in turns]
