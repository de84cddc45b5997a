"""Math rewards: extract the final answer of a response and grade it.

`extract_answer` finds the answer the MATH format asks for: the last
\\boxed{...} / \\boxed X / \\fbox{...}, or "Final Answer: The final answer is
$X$. I hope it is correct.", whichever comes last.

`is_equivalent` compares a candidate with a reference answer:
  1. both are normalised as strings (`math_normalize`); equal strings match;
  2. structure is compared: tuples and intervals element by element with the
     same brackets ("(1,2]" is not "[1,2]"), sets, unions and bare lists
     ("2, -3" = "-3, 2") as multisets, "a \\pm b" as {a+b, a-b};
  3. plain numbers and integer fractions are compared exactly in-process;
  4. everything else goes to sympy (latex2sympy2_extended parses), in a
     worker process that is killed at the deadline (`sympy_pool`), so no
     input can hang the grader.
"""
import re
import time
from typing import Optional

from score_jax.rewards import math_normalize as mn
from score_jax.rewards import sympy_pool

DEFAULT_TIMEOUT_S = 1.0
_POOL = sympy_pool.SympyPool()
_FINAL_ANSWER = 'final answer is'
_HOPE = 'i hope it is correct'
_BOX = re.compile(r'\\(?:boxed|fbox)(?![a-zA-Z])')
_BASE_SUBSCRIPT = re.compile(r'\d_\{?\d+\}?')


def _closing_braces(text: str) -> dict[int, int]:
  """Maps the index of each matched '{' to the index of its '}' (one pass)."""
  closing, stack = {}, []
  for i, c in enumerate(text):
    if c == '{':
      stack.append(i)
    elif c == '}' and stack:
      closing[stack.pop()] = i
  return closing


def _boxed_contents(text: str) -> list[tuple[int, str]]:
  """(position, content) of each \\boxed{...}, \\boxed X and \\fbox{...}."""
  found, closing = [], None
  for m in _BOX.finditer(text):
    i = m.end()
    while i < len(text) and text[i] == ' ':
      i += 1
    if i < len(text) and text[i] == '{':
      closing = _closing_braces(text) if closing is None else closing
      if i in closing:
        found.append((m.start(), text[i + 1:closing[i]]))
    elif i > m.end():  # "\boxed 5": the token up to a space or a dollar.
      token = re.match(r'[^\s$]{1,200}', text[i:i + 200])
      if token:
        found.append((m.start(), token.group().rstrip('.')))
  return found


def _final_answer(text: str) -> Optional[tuple[int, str]]:
  """(position, X) of the last "final answer is $X$[.] [I hope it is correct]"."""
  start = text.lower().rfind(_FINAL_ANSWER)
  if start < 0:
    return None
  rest = text[start + len(_FINAL_ANSWER):start + len(_FINAL_ANSWER) + 2000]
  hope = rest.lower().find(_HOPE)
  if hope >= 0:
    answer = rest[:hope].strip().rstrip('.').strip()
  else:
    m = re.match(r'\s*\$([^$]+)\$', rest)
    if not m:
      return None
    answer = m.group(1)
  if answer.startswith('$') and answer.endswith('$'):
    answer = answer[1:-1]
  inner = _boxed_contents(answer)
  return start, (inner[-1][1] if inner else answer)


def extract_answer(text: str) -> Optional[str]:
  """The final answer in `text` (the last one given), or None.

  Args:
    text: a model response.

  Returns:
    The content of the last \\boxed{...}/\\fbox{...}/\\boxed X or "The final
    answer is $X$" (X itself, boxes removed), None when there is none.
  """
  if not isinstance(text, str):
    raise TypeError(f'extract_answer: expected str, got {type(text).__name__}')
  candidates = _boxed_contents(text)
  final = _final_answer(text)
  if final:
    candidates.append(final)
  if not candidates:
    return None
  answer = max(candidates, key=lambda c: c[0])[1].strip()
  return answer.strip('$').strip() or None


def _elements(s: str):
  """(kind, brackets, items) of a normalised answer.

  Kinds: 'ordered' (a bracketed tuple or interval, brackets matter),
  'unordered' (a set, union or bare comma list) or 'scalar'.
  """
  union = mn.split_top_level(s, '\\cup')
  if len(union) > 1:
    return 'unordered', '\\cup', union
  outer = mn.outer_brackets(s)
  if outer:
    opener, inner, closer = outer
    items = mn.split_top_level(inner, ',')
    if opener == '\\{':
      return 'unordered', '', items  # A set is a bare list.
    if len(items) > 1:
      return 'ordered', opener + closer, items
  items = mn.split_top_level(s, ',')
  if len(items) == 1 and len(pm := mn.split_top_level(s, '\\pm')) == 2:
    items = [pm[0] + '+' + pm[1], pm[0] + '-' + pm[1]]
  if len(items) > 1:
    stripped = [mn.strip_assignment(x) for x in items]
    names = {x[:len(x) - len(y)] for x, y in zip(items, stripped) if x != y}
    # "x=2, x=-3" lists values of x; "x=1, y=2" keeps its names.
    return 'unordered', '', stripped if len(names) <= 1 else items
  return 'scalar', '', [s]


class _Comparison:
  """Compares normalised answers against one deadline."""

  def __init__(self, timeout_s: float, pool: sympy_pool.SympyPool):
    self.timeout_s = timeout_s
    self.deadline = time.monotonic() + timeout_s
    self.pool = pool

  def scalars(self, a: str, b: str) -> bool:
    if a == b:
      return True
    if not a or not b:
      return False
    if re.fullmatch(r'[a-zA-Z ]+', a) and re.fullmatch(r'[a-zA-Z ]+', b):
      return a.lower() == b.lower()
    fa, fb = mn.as_fraction(a), mn.as_fraction(b)
    if fa is not None and fb is not None:
      return fa == fb
    if _BASE_SUBSCRIPT.search(a) or _BASE_SUBSCRIPT.search(b):
      return False  # 52_8: sympy would drop the base; strings differ.
    if not self.pool.started:  # Once per process: sympy imports, off the clock.
      self.pool.start()
      self.deadline = time.monotonic() + self.timeout_s
    remaining = self.deadline - time.monotonic()
    return remaining > 0 and bool(self.pool.equal(a, b, remaining))

  def answers(self, a: str, b: str, depth: int = 0) -> bool:
    """Structure first (see `_elements`), then scalars."""
    if a == b:
      return True
    if depth > 3:
      return False
    kind_a, brackets_a, items_a = _elements(a)
    kind_b, brackets_b, items_b = _elements(b)
    if kind_a == kind_b == 'scalar':
      return self.scalars(a, b)
    if (kind_a, brackets_a, len(items_a)) != (kind_b, brackets_b,
                                              len(items_b)):
      return False
    if kind_a == 'ordered':
      return all(self.answers(x, y, depth + 1)
                 for x, y in zip(items_a, items_b))
    unmatched = list(items_b)
    for x in items_a:  # Greedy matching is exact: equality is transitive.
      k = next((k for k, y in enumerate(unmatched)
                if self.answers(x, y, depth + 1)), None)
      if k is None:
        return False
      unmatched.pop(k)
    return True


def is_equivalent(candidate: Optional[str], reference: Optional[str],
                  timeout_s: float = DEFAULT_TIMEOUT_S,
                  pool: Optional[sympy_pool.SympyPool] = None) -> bool:
  """Whether two LaTeX answers are mathematically the same.

  Args:
    candidate: the model's answer (e.g. from `extract_answer`), or None.
    reference: the reference answer.
    timeout_s: the most the symbolic part may take; False when it is not
      settled by then. (The process's first symbolic check also waits for the
      sympy workers to import, once.)
    pool: the sympy workers to use; a shared pool of 2 by default.

  Returns:
    True when equivalent, False otherwise (including unparsable or too slow).
  """
  if candidate is None or reference is None:
    return False
  comparison = _Comparison(timeout_s, pool or _POOL)
  a, b = mn.normalize(candidate), mn.normalize(reference)
  if a == b:
    return True
  too_big = max(len(a), len(b)) > mn.MAX_LENGTH or max(
      mn.nesting_depth(a), mn.nesting_depth(b)) > mn.MAX_DEPTH
  if too_big:
    return False
  return any(comparison.answers(x, y)
             for x in mn.readings(a) for y in mn.readings(b))


def math_reward(response: str, reference: str,
                timeout_s: float = DEFAULT_TIMEOUT_S,
                pool: Optional[sympy_pool.SympyPool] = None) -> float:
  """1.0 when the response's final answer is equivalent to `reference`."""
  return float(is_equivalent(extract_answer(response), reference, timeout_s,
                             pool))
