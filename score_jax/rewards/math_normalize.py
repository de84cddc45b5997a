"""String normalisation of LaTeX math answers (no sympy, linear time).

`normalize` maps the many spellings of one answer to one string:
\\dfrac/\\tfrac -> \\frac, \\frac12 -> \\frac{1}{2}, \\sqrt2 -> \\sqrt{2},
a/b of integers -> \\frac{a}{b}, .5 -> 0.5, \\left/\\right and sizing
commands dropped, LaTeX spacing dropped, degrees, percent and dollar signs
dropped, units (\\text{ cm}, "inches") dropped, \\text{A} -> A, 85,\\!184 ->
85184, "x = 3" -> "3", a trailing period dropped, spaces dropped.

`split_top_level` and `outer_brackets` expose the structure (tuples,
intervals, sets, lists) for element-wise comparison; `as_fraction` reads
plain numbers exactly. Everything here scans each string a bounded number of
times, so no input (however nested) can make it slow.
"""
import fractions
import re
from typing import Optional

MAX_LENGTH = 1000  # Longer answers are compared as strings only.
MAX_DEPTH = 30  # Deeper bracket nesting is compared as strings only.

_DELIMITERS = ['\\(', '\\)', '\\[', '\\]', '$']
_DROPPED_COMMANDS = re.compile(
    r'\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|'
    r'bigg|Bigg|middle|displaystyle|textstyle|limits|nolimits)(?![a-zA-Z])')
_SPACING = re.compile(r'(?<!\\)\\[,:;! ]|\\q?quad(?![a-zA-Z])|~')
_RENAMES = [(re.compile(p), r) for p, r in [
    (r'\\[dt]frac(?![a-zA-Z])', r'\\frac'),
    (r'\\[dt]binom(?![a-zA-Z])', r'\\binom'),
    (r'\\le(?![a-zA-Z])', r'\\leq'), (r'\\ge(?![a-zA-Z])', r'\\geq'),
    (r'\\ne(?![a-zA-Z])', r'\\neq'),
    (r'\{(?:bmatrix|Bmatrix|vmatrix|Vmatrix|smallmatrix|matrix)\}',
     '{pmatrix}'),
    (r'\\varnothing', r'\\emptyset'),
    (r'\\(?:mathbf|boldsymbol|bm)(?![a-zA-Z])', ''),
    (r'\\infinity', r'\\infty'),
]]
_DEGREES = re.compile(r'\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree'
                      r'|\^\{\s*\\text\{\s*o\s*\}\s*\}')
_TEXT_COMMANDS = ('\\text', '\\textbf', '\\textit', '\\textrm', '\\mbox',
                  '\\mathrm', '\\mathit', '\\textnormal', '\\operatorname')
_UNIT_WORDS = (
    'cm|mm|km|meters?|metres?|centimeters?|inch|inches|in|feet|foot|ft|'
    'yards?|yd|miles?|mi|mph|kph|units?|sq|square|cubic|degrees?|radians?|'
    'dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|'
    'months?|years?|pounds?|lbs?|ounces?|oz|gallons?|liters?|litres?|grams?|'
    'kg|points?|students?|people|persons?|ways?|integers?|numbers?|times|'
    'steps?|edges?|faces?|vertices|marbles?|coins?|handshakes?|games?|'
    'digits?|terms?|feet\\^2|percent|sq\\.?\\s*units?')
_TRAILING_UNITS = re.compile(rf'(?<=[\d}}])\s*(?:(?:{_UNIT_WORDS})\.?'
                             r'(?:\^\{?\d\}?)?\s*)+$')
_ASSIGNMENT = re.compile(
    r'^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-z]\))?\s*'
    r'(?:=|\\in)\s*(?=\S)')
_THOUSANDS = re.compile(r'[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?')
_NUMBER = re.compile(r'[-+]?(?:\d+(?:\.\d*)?|\.\d+)')
_FRACTION = re.compile(r'([-+]?)\\frac\{(\d+)\}\{(\d+)\}|([-+]?\d+)/(\d+)')
_OPENERS, _CLOSERS = '([{', ')]}'


def _group_end(s: str, i: int) -> int:
  """Index after the balanced {...} group starting at s[i] == '{' (or -1)."""
  depth = 0
  for j in range(i, len(s)):
    if s[j] == '{' and (j == 0 or s[j - 1] != '\\'):
      depth += 1
    elif s[j] == '}' and (j == 0 or s[j - 1] != '\\'):
      depth -= 1
      if depth == 0:
        return j + 1
  return -1


def _argument(s: str, i: int):
  """The LaTeX argument at s[i:]: (text in braces, end index) or None."""
  while i < len(s) and s[i] == ' ':
    i += 1
  if i >= len(s):
    return None
  if s[i] == '{':
    end = _group_end(s, i)
    return None if end < 0 else (s[i + 1:end - 1], end)
  if s[i] == '\\':
    m = re.compile(r'\\[a-zA-Z]+').match(s, i)
    return (m.group(), m.end()) if m else None
  return s[i], i + 1


def _brace_arguments(s: str, command: str, nargs: int) -> str:
  """Rewrites \\frac12 / \\sqrt2 / \\sqrt[3]8 with braced arguments."""
  out, i = [], 0
  pattern = re.compile(re.escape(command) + r'(?![a-zA-Z])')
  while (m := pattern.search(s, i)):
    out.append(s[i:m.end()])
    i = m.end()
    if command == '\\sqrt' and s.startswith('[', i) and ']' in s[i:]:
      close = s.index(']', i)
      out.append(s[i:close + 1])
      i = close + 1
    for _ in range(nargs):
      arg = _argument(s, i)
      if arg is None:
        break
      out.append('{' + arg[0] + '}')
      i = arg[1]
  out.append(s[i:])
  return ''.join(out)


def _replace_text_groups(s: str) -> str:
  """Unwraps \\text{...}: words that follow math are units and go."""
  for command in _TEXT_COMMANDS:
    pattern = re.compile(re.escape(command) + r'\s*(?=\{)')
    i = 0
    while (m := pattern.search(s, i)):
      end = _group_end(s, m.end())
      if end < 0:
        break
      content = s[m.end() + 1:end - 1].strip()
      rest = (s[:m.start()] + s[end:]).strip()
      words = bool(re.fullmatch(r'[a-zA-Z][a-zA-Z .\'-]*', content))
      if content.lower() in ('and', 'or', ','):
        new = ','
      elif words and rest and re.search(r'[\d}]', s[:m.start()]):
        new = ''  # A unit or a word after a number: "5\text{ cm}^2".
        power = re.match(r'\s*\^\s*\{?\s*\d\s*\}?', s[end:])
        end += power.end() if power else 0
      else:
        new = content
      s = s[:m.start()] + new + s[end:]
      i = m.start() + len(new)
  return s


def _drop_spaces(s: str) -> str:
  """Drops whitespace except between letters or digits."""
  s = re.sub(r'\s+', ' ', s).strip()
  return re.sub(' ', lambda m: ' ' if _keeps_space(s, m.start()) else '', s)


def _keeps_space(s: str, i: int) -> bool:
  """A space at s[i] matters between two letters or digits: "\\log_2 8"."""
  return 0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()


def strip_assignment(s: str) -> str:
  """'x = 3' -> '3'; '\\theta=\\pi' -> '\\pi'; 'f(x) = 2x' -> '2x'."""
  m = _ASSIGNMENT.match(s)
  if m and '=' not in s[m.end():]:
    return s[m.end():]
  return s


def normalize(answer: str) -> str:
  """The canonical string of a LaTeX answer (see the module docstring)."""
  s = answer.strip()
  if len(s) > MAX_LENGTH:
    return s
  s = s.replace('\\$', '').replace('\\%', '').replace('%', '')
  for delimiter in _DELIMITERS:
    s = s.replace(delimiter, '')
  s = s.replace('{,}', ',')
  s = re.sub(r'(\d),\\!\s*(?=\d{3})', r'\1', s)  # 85,\!184 -> 85184
  s = _DROPPED_COMMANDS.sub('', s)
  s = _SPACING.sub(' ', s)
  for pattern, replacement in _RENAMES:
    s = pattern.sub(replacement, s)
  s = _DEGREES.sub('', s)
  s = _replace_text_groups(s)
  s = _TRAILING_UNITS.sub('', s.strip()) if re.search(r'\d', s) else s
  s = re.sub(r'^\s*\\?\{?\(?\s*([A-Ea-e])\s*\)?\}?\s*$', r'\1', s)  # (A) -> A
  s = s.strip().rstrip('.').strip()
  for command, nargs in (('\\frac', 2), ('\\binom', 2), ('\\sqrt', 1)):
    s = _brace_arguments(s, command, nargs)
  s = re.sub(r'(?<![\d.])\.(\d)', r'0.\1', s)  # .5 -> 0.5
  s = re.sub(r'([_^])\{\s*([a-zA-Z0-9])\s*\}', r'\1\2', s)  # x^{2} -> x^2
  s = _drop_spaces(s)
  s = strip_assignment(s)
  m = re.fullmatch(r'([-+]?)(\d+)/(\d+)', s)
  if m:
    s = f'{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}'
  return s


def readings(s: str) -> list[str]:
  """Normalised readings: '1,000' is both the number 1000 and a list."""
  if _THOUSANDS.fullmatch(s):
    return [s.replace(',', ''), s]
  return [s]


def nesting_depth(s: str) -> int:
  depth = deepest = 0
  for c in s:
    if c in _OPENERS:
      depth += 1
      deepest = max(deepest, depth)
    elif c in _CLOSERS:
      depth -= 1
  return deepest


def split_top_level(s: str, separator: str) -> list[str]:
  """Splits at `separator` outside all brackets."""
  parts, depth, start, i = [], 0, 0, 0
  while i < len(s):
    c = s[i]
    if c in _OPENERS:
      depth += 1
    elif c in _CLOSERS:
      depth -= 1
    elif depth == 0 and s.startswith(separator, i):
      parts.append(s[start:i])
      start = i + len(separator)
      i = start
      continue
    i += 1
  parts.append(s[start:])
  return parts


def outer_brackets(s: str) -> Optional[tuple[str, str, str]]:
  """('(', inner, ']') when s is one bracketed group, e.g. an interval."""
  if s.startswith('\\{') and s.endswith('\\}'):
    opener, closer, inner = '\\{', '\\}', s[2:-2]
  elif len(s) >= 2 and s[0] in '([' and s[-1] in ')]':
    opener, closer, inner = s[0], s[-1], s[1:-1]
  else:
    return None
  depth = 0
  for c in inner:  # The first bracket must close at the very end.
    depth += (c in _OPENERS) - (c in _CLOSERS)
    if depth < 0:
      return None
  return (opener, inner, closer) if depth == 0 else None


def as_fraction(s: str) -> Optional[fractions.Fraction]:
  """The exact value of a plain number, decimal or integer fraction."""
  if len(s) > 60:
    return None
  if _NUMBER.fullmatch(s):
    return fractions.Fraction(s)
  m = _FRACTION.fullmatch(s)
  if m and m.group(2) is not None:
    sign = -1 if m.group(1) == '-' else 1
    den = int(m.group(3))
    return sign * fractions.Fraction(int(m.group(2)), den) if den else None
  if m:
    den = int(m.group(5))
    return fractions.Fraction(int(m.group(4)), den) if den else None
  return None
