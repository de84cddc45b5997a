"""Tests of score_jax.data.prompt_format against hand-written prompt texts."""
import types

import numpy as np
import pytest

from score_jax.data import arithmetic
from score_jax.data import prompt_format as pf
from score_jax.data import synthetic
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.data.pipeline import tokenize_prompts
from score_jax.sampling import trace as trace_lib

_CORPUS = [
    'Q: What is 3 + 4?\nA: 7\nQ: What is 12 * 5?\nA: 60\n\n'
    'Q: There might be an error in the answer above. What is the correct answer?\nA:',
    '<start_of_turn>user\nCheck and correct.<end_of_turn>\n<start_of_turn>model\n',
    'the quick brown fox 0123456789 + - * = ? .',
] * 20

FEWSHOT = pf.FewShotFormat(shots=(('What is 3 + 4?', '7'), ('What is 2 * 6?', '12')))


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.train_sentencepiece(_CORPUS, vocab_size=150)


def test_fewshot_prompt_is_the_hand_written_text(tok):
  want = 'Q: What is 3 + 4?\nA: 7\nQ: What is 2 * 6?\nA: 12\nQ: What is 5 - 1?\nA:'
  assert FEWSHOT.prompt_ids(tok, 'What is 5 - 1?') == tok.encode(want, add_bos=True)
  head, body, foot = FEWSHOT.prompt_parts(tok, 'What is 5 - 1?')
  assert tok.decode(head + body + foot) == want


def test_fewshot_shots_can_show_the_second_turn(tok):
  fmt = pf.FewShotFormat(shots=(('3 + 4', '7'),), question_prefix='', answer_prefix=' =',
                         shot_instruction='What is the correct answer?')
  want = '3 + 4 = 7\nWhat is the correct answer? = 7\n5 - 1 ='
  assert fmt.prompt_ids(tok, '5 - 1') == tok.encode(want, add_bos=True)
  assert tok.decode(fmt.chunk_ids(tok, 'What is the correct answer?')) == (
      '\nWhat is the correct answer? =')


def test_fewshot_shots_can_show_a_changed_second_answer(tok):
  fmt = pf.FewShotFormat(shots=(('3 + 4', '7'), ('2 + 2', '4')), question_prefix='',
                         answer_prefix=' =', shot_instruction='Fix:',
                         shot_turns=(('8', '7'), ('4', '5')))
  want = '3 + 4 = 8\nFix: = 7\n2 + 2 = 4\nFix: = 5\n5 - 1 ='
  assert fmt.prompt_ids(tok, '5 - 1') == tok.encode(want, add_bos=True)


@pytest.mark.parametrize('kwargs,says', [
    (dict(shot_turns=(('8', '7'),)), r'expected one per shot \(2\)'),
    (dict(shot_turns=(('8', '7'), ('4', '4')), shot_instruction=''), 'and a shot_instruction'),
    (dict(shot_turns=(('8\n', '7'), ('4', '4'))), 'contains the delimiter'),
])
def test_fewshot_bad_shot_turns_are_one_line(kwargs, says):
  args = dict(shots=(('3 + 4', '7'), ('2 + 2', '4')), shot_instruction='Fix:')
  with pytest.raises(ValueError, match=says):
    pf.FewShotFormat(**{**args, **kwargs})


def test_fewshot_chunk_is_plain_style_and_opens_with_the_delimiter(tok):
  chunk = FEWSHOT.chunk_ids(tok, 'What is the correct answer?')
  assert chunk == tok.encode('\nQ: What is the correct answer?\nA:')
  assert chunk[0] == tok.encode('\n')[0] == FEWSHOT.turn_end_ids(tok)[0]


def test_fewshot_stops_on_eos_and_every_newline_piece(tok):
  stops = FEWSHOT.stop_ids(tok)
  assert stops[0] == tok.eos_id
  pieces = {tok.id_to_piece(i) for i in stops[1:]}
  assert '\n' in pieces and all(p.startswith('\n') for p in pieces)
  # '\n\n' is a piece of this vocabulary (the corpus has blank lines): it stops too.
  assert tok.encode('\n\n') == [i for i in stops if tok.id_to_piece(i) == '\n\n']


def test_fewshot_grades_the_first_line_only():
  assert FEWSHOT.response_text(' 12\nQ: What is 1 + 1?') == ' 12'
  assert FEWSHOT.response_text(' 12') == ' 12'


def test_fewshot_rejects_answers_holding_the_delimiter():
  with pytest.raises(ValueError, match='delimiter'):
    pf.FewShotFormat(shots=(('q', 'two\nlines'),))


def test_chat_format_is_the_gemma_layout(tok):
  chat = pf.ChatFormat()
  assert chat.prompt_ids(tok, 'hi') == tok.encode(
      '<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n', add_bos=True)
  assert chat.chunk_ids(tok, 'Check and correct.') == tok.encode(
      '<end_of_turn>\n<start_of_turn>user\nCheck and correct.<end_of_turn>\n'
      '<start_of_turn>model\n')
  assert chat.stop_ids(tok) == (tok.eos_id, tok.end_of_turn_id)
  assert chat.response_text('a\nb') == 'a\nb'


def test_for_task_follows_the_task_field():
  assert isinstance(pf.for_task(synthetic.SyntheticArithmeticTask()), pf.ChatFormat)
  task = arithmetic.ArithmeticTask(num_train=10, num_test=5, num_shots=2)
  fmt = pf.for_task(task)
  shots = task._splits()[0]   # pylint: disable=protected-access
  assert fmt.shots == tuple((e.expression, e.answer) for e in shots)
  assert (fmt.question_prefix, fmt.answer_prefix) == ('', ' =')
  with pytest.raises(ValueError, match='prompt_format'):
    pf.for_task(types.SimpleNamespace(name='no_shots', prompt_format='fewshot'))
  with pytest.raises(ValueError, match="prompt_format='plain'"):
    pf.for_task(arithmetic.ArithmeticTask(prompt_format='plain'))


def test_pipeline_tokenizes_in_the_task_format(tok):
  task = arithmetic.ArithmeticTask(num_train=10, num_test=5, num_shots=2)
  fmt = pf.for_task(task)
  examples = task.load_examples('test')
  items, _ = tokenize_prompts(examples, task, tok, max_length=512)
  for (index, ids), e in zip(items, examples):
    assert index == e.index
    assert ids.tolist() == fmt.prompt_ids(tok, e.expression)


def test_trace_of_a_fewshot_episode_drops_the_doubled_delimiter(tok):
  """y1 that stopped on '\\n' keeps it; the chunk's own '\\n' is then dropped."""
  prompt = FEWSHOT.prompt_ids(tok, 'What is 5 - 1?')
  chunk = FEWSHOT.chunk_ids(tok, 'What is the correct answer?')
  nl = FEWSHOT.turn_end_ids(tok)
  y1_stopped, y1_cut = tok.encode(' 4') + nl, tok.encode(' 5')
  y2 = tok.encode(' 4') + nl
  t = trace_lib.pack_traces([prompt, prompt], [y1_stopped, y1_cut], chunk, [y2, y2],
                            pad_id=tok.pad_id, length=128, stop_ids=FEWSHOT.stop_ids(tok))
  texts = [tok.decode(np.asarray(t.tokens_BT)[b][np.asarray(t.valid_BT)[b]])
           for b in range(2)]
  head = 'Q: What is 3 + 4?\nA: 7\nQ: What is 2 * 6?\nA: 12\nQ: What is 5 - 1?\nA:'
  assert texts == [head + ' 4\nQ: What is the correct answer?\nA: 4\n', head + ' 5\nQ: What is the correct answer?\nA: 4\n']
  assert np.asarray(t.chunk_len_B).tolist() == [len(chunk) - 1, len(chunk)]
  assert np.asarray(t.y1_stop_B).tolist() == [0, 1]
  assert np.asarray(t.y2_stop_B).tolist() == [0, 0]
