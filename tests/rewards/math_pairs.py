"""Labelled answer pairs built from MATH test answers, for grader tests.

Each pair (candidate, reference, label, how) rewrites a reference answer in a
way whose truth is known by construction: `equivalent_rewrites` keep the
value (fraction spellings, a terminating decimal, a reordered sum, units,
"x =", \\left/\\right, degrees, thousands commas, spaces, ...);
`inequivalent_rewrites` change it (a perturbed number, swapped tuple
elements, a wrong interval bracket, a flipped sign).
"""
import fractions
import json
import random
import re

from score_jax.rewards import math_normalize as mn


def boxed_answer(solution: str):
  """The content of the last \\boxed{...} of a MATH solution."""
  start = solution.rfind('\\boxed{')
  if start < 0:
    return None
  depth = 0
  for j in range(start + 6, len(solution)):
    depth += (solution[j] == '{') - (solution[j] == '}')
    if depth == 0:
      return solution[start + 7:j]
  return None


def _terminating_decimal(value: fractions.Fraction):
  den = value.denominator
  for p in (2, 5):
    while den % p == 0:
      den //= p
  if den != 1:
    return None
  digits = 0
  while (value * 10 ** digits).denominator != 1:
    digits += 1
  return f'{float(value):.{digits}f}' if digits <= 6 else None


def _top_level_terms(s: str):
  """Splits a sum at top-level + and - (keeping signs), or None."""
  terms, depth, start = [], 0, 0
  for i, c in enumerate(s):
    if c in '{([':
      depth += 1
    elif c in '})]':
      depth -= 1
    elif c in '+-' and depth == 0 and i > 0 and s[i - 1] not in '^_{(=,':
      terms.append(s[start:i])
      start = i
  terms.append(s[start:])
  terms = [t.strip() for t in terms]
  return terms if len(terms) >= 2 and all(terms) else None


def equivalent_rewrites(ref: str):
  """(candidate, how) pairs whose value is the reference's."""
  value = mn.as_fraction(mn.normalize(ref))
  plain = re.fullmatch(r'-?\d+', ref)
  simple_frac = re.fullmatch(r'(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}', ref)
  out = _fraction_spellings(ref, simple_frac)
  if value is not None and not plain:
    out += _decimal_spellings(value)
  if plain:
    out += _integer_decorations(ref)
  out += _notation_rewrites(ref)
  out += _root_spellings(ref)
  out += _quotient_spellings(ref, simple_frac)
  return out + _x_prefixed(ref, out)


def _fraction_spellings(ref: str, simple_frac):
  """\\dfrac, \\tfrac, \\frac12 and a/b spellings of the reference's fractions."""
  out = []
  if '\\frac' in ref:
    out.append((ref.replace('\\frac', '\\dfrac'), 'dfrac'))
    out.append((ref.replace('\\frac', '\\tfrac'), 'tfrac'))
    short = re.sub(r'\\frac\{(\d)\}\{(\d)\}', r'\\frac\1\2', ref)
    if short != ref:
      out.append((short, 'frac short form'))
  if simple_frac:
    sign, num, den = simple_frac.groups()
    out.append((f'{sign}{num}/{den}', 'a/b'))
  return out


def _decimal_spellings(value: fractions.Fraction):
  """The value as a terminating decimal, with and without a leading zero."""
  decimal = _terminating_decimal(value)
  if not decimal:
    return []
  out = [(decimal, 'decimal')]
  if decimal.startswith('0.'):
    out.append((decimal[1:], 'no leading zero'))
  return out


def _integer_decorations(ref: str):
  """An integer with a unit, degrees, dollars, percent or thousands commas."""
  out = [(ref + '\\text{ cm}', 'text unit'), (ref + ' \\mbox{ units}', 'mbox unit'),
         (ref + '^\\circ', 'degrees'), ('\\$' + ref, 'dollars'),
         (ref + '\\%', 'percent')]
  if abs(int(ref)) >= 1000:
    out.append((f'{int(ref):,}', 'thousands comma'))
    out.append((f'{int(ref):,}'.replace(',', ',\\!'), 'thousands ,\\!'))
  return out


def _notation_rewrites(ref: str):
  """An "x = " prefix, \\left( \\right), a reordered sum and added spaces."""
  out = []
  if (',' not in ref and '=' not in ref and '\\text' not in ref and
      '\\begin' not in ref and '\\cup' not in ref):
    out.append(('x = ' + ref, 'x = prefix'))
  outer = mn.outer_brackets(ref.replace('\\left', '').replace('\\right', ''))
  if outer and outer[0] == '(' and '\\left' not in ref:
    out.append(('\\left(' + outer[1] + '\\right' + outer[2], 'left/right'))
  terms = _top_level_terms(ref)
  if (terms and not re.search(r',|=|\\pm|\\begin|\\text', ref) and
      not ref.endswith('.')):
    first = terms[0] if terms[0][0] in '+-' else '+' + terms[0]
    flipped = ''.join(terms[1:]) + first
    out.append((flipped.lstrip('+'), 'reordered sum'))
  spaced = re.sub(r'([+=]|(?<!\\),(?!\\!)|(?<=[^\^_{(\\])-)', r' \1 ', ref)
  if spaced != ref:
    out.append((spaced, 'spaces'))
  return out


def _root_spellings(ref: str):
  """\\sqrt2 for \\sqrt{2}, and a\\sqrt{b} as \\sqrt{a^2 b}."""
  out = []
  if '\\sqrt{' in ref:
    short = re.sub(r'\\sqrt\{(\d)\}', r'\\sqrt\1', ref)
    if short != ref:
      out.append((short, 'sqrt short form'))
  m = re.fullmatch(r'(\d+)\\sqrt\{(\d+)\}', ref)
  if m:
    inside = int(m.group(1)) ** 2 * int(m.group(2))
    out.append((f'\\sqrt{{{inside}}}', 'coefficient under the root'))
  return out


def _quotient_spellings(ref: str, simple_frac):
  """A non-numeric \\frac{a}{b} as (a)/(b); numeric fractions inside as decimals."""
  out = []
  m = re.fullmatch(r'(-?)\\frac\{(.+)\}\{(.+)\}', ref)
  if m and mn.outer_brackets('{' + m.group(2) + '}') is None and _balanced(
      m.group(2)) and _balanced(m.group(3)) and not simple_frac:
    out.append((f'{m.group(1)}({m.group(2)})/({m.group(3)})', '(a)/(b)'))
  decimals = re.sub(r'\\frac\{(\d+)\}\{(\d+)\}', _decimal_or_same, ref)
  if decimals != ref and not simple_frac:
    out.append((decimals, 'decimals inside'))
  return out


def _x_prefixed(ref: str, rewrites):
  """Some rewrites again with x= in front (as they are when the reference has a comma)."""
  if '=' in ref or '\\text' in ref or '\\begin' in ref:
    return []
  return [('x=' + candidate if ',' not in ref else candidate, f'x = and {how}')
          for candidate, how in rewrites
          if how in ('dfrac', 'decimals inside', 'left/right', 'spaces')]


def _balanced(s: str) -> bool:
  depth = 0
  for c in s:
    depth += (c == '{') - (c == '}')
    if depth < 0:
      return False
  return depth == 0


def _decimal_or_same(m):
  decimal = _terminating_decimal(fractions.Fraction(int(m.group(1)),
                                                    int(m.group(2))))
  return decimal if decimal and int(m.group(2)) else m.group()


def inequivalent_rewrites(ref: str, rng: random.Random):
  """(candidate, how) pairs whose value differs from the reference's."""
  out = []
  numbers = [m for m in re.finditer(r'\d+', ref)
             if not ref[:m.start()].endswith(('_', '_{', '\\sqrt[', '^{\\'))]
  if numbers and '\\text' not in ref:
    m = rng.choice(numbers)
    out.append((ref[:m.start()] + str(int(m.group()) + 1) + ref[m.end():],
                'perturbed number'))
  outer = mn.outer_brackets(ref.replace('\\left', '').replace('\\right', ''))
  if outer:
    opener, inner, closer = outer
    items = mn.split_top_level(inner, ',')
    finite = lambda x: '\\infty' not in x
    if len(items) >= 2 and mn.normalize(items[0]) != mn.normalize(items[1]):
      swapped = ','.join([items[1], items[0]] + items[2:])
      values = [mn.as_fraction(mn.normalize(x)) for x in items[:2]]
      if None in values or values[0] != values[1]:
        out.append((opener + swapped + closer, 'swapped elements'))
    if len(items) == 2 and finite(items[0]):
      new_open = '[' if opener == '(' else '('
      out.append((new_open + inner + closer, 'wrong interval'))
    elif len(items) == 2 and finite(items[1]):
      new_close = ']' if closer == ')' else ')'
      out.append((opener + inner + new_close, 'wrong interval'))
  value = mn.as_fraction(mn.normalize(ref))
  if value:
    out.append((ref[1:] if ref.startswith('-') else '-' + ref, 'flipped sign'))
  m = re.search(r'\\frac\{(\d+)\}\{(\d+)\}', ref)
  if m and m.group(1) != m.group(2) and '\\text' not in ref:
    out.append((ref[:m.start()] + f'\\frac{{{m.group(2)}}}{{{m.group(1)}}}' +
                ref[m.end():], 'inverted fraction'))
  m = re.search(r'\\sqrt\{(\d+)\}', ref)
  if m and int(m.group(1)) > 1 and round(int(m.group(1)) ** 0.5) ** 2 != int(
      m.group(1)):
    out.append((ref[:m.start()] + m.group(1) + ref[m.end():], 'dropped root'))
  terms = _top_level_terms(ref)
  if terms and not re.search(r',|=|\\pm|\\begin|\\text', ref):
    out.append((terms[0], 'dropped term'))
  return out


def build_pairs(math_test_path, n_problems: int = 300, seed: int = 0):
  """Seeded labelled pairs: every rewrite of `n_problems` MATH test answers."""
  with open(math_test_path, encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  rng = random.Random(seed)
  pairs = []
  for row in rng.sample(rows, n_problems):
    ref = boxed_answer(row['solution'])
    if ref is None:
      continue
    pairs.append((ref, ref, True, 'identical'))
    eq = equivalent_rewrites(ref)
    for cand, how in eq:
      pairs.append((cand, ref, True, how))
    neq = inequivalent_rewrites(ref, rng)
    for cand, how in neq:
      pairs.append((cand, ref, False, how))
  return pairs


# (candidate, reference, label): spot checks of the semantics we chose.
HAND_PICKED = [
    ('\\frac{1}{2}', '\\frac{2}{4}', True), ('x^2', 'x^3', False),
    ('(1,2)', '[1,2]', False), ('(1,2)', '(1,2]', False),
    ('(1,2)', '(2,1)', False), ('\\{1,2\\}', '\\{2,1\\}', True),
    ('2, -3', '-3, 2', True), ('1 \\pm \\sqrt{2}', '1+\\sqrt2, 1-\\sqrt2', True),
    ('\\sqrt{8}', '2\\sqrt{2}', True),
    ('\\frac{\\sqrt{2}}{2}', '\\frac{1}{\\sqrt{2}}', True),
    ('3.14', '\\pi', False), ('0.333', '\\frac13', False), ('10', '10.0', True),
    ('1,000', '1000', True), ('1,000', '1,001', False),
    ('70,110', '110, 70', True), ('\\infty', '-\\infty', False),
    ('(-\\infty, 3]', '(-\\infty,3)', False), ('y=2x+3', '2x+3', True),
    ('2x+3', '3+2x', True), ('x=1, y=2', 'x=2, y=1', False),
    ('x=1, y=2', 'y=2, x=1', True), ('\\text{(C)}', 'C', True), ('C', 'D', False),
    ('5\\text{ cm}^2', '5', True), ('\\dfrac{3}{4}', '0.75', True),
    ('12\\text{ and }13', '12, 13', True), ('-\\frac{1}{2}', '\\frac{-1}{2}', True),
    ('\\frac{-1}{2}', '-0.5', True), ('e', '2.718', False),
    ('i', '\\sqrt{-1}', True), ('2i', '2', False), ('a+b', 'b+a', True),
    ('\\$1.50', '1.5', True), ('\\frac{1}{2}x', '\\frac{x}{2}', True),
    ('x \\in [2, 5)', '[2,5)', True), ('2^{10}', '1024', True),
    ('10!', '3628800', True), ('\\binom{5}{2}', '10', True),
    ('\\log_2 8', '3', True), ('52_8', '52_{8}', True), ('52_8', '42', False),
    ('\\textbf{(A)}', 'A', True), ('\\sin^2 x+\\cos^2 x', '1', True),
    ('\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}',
     '\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}', False),
    ('\\begin{bmatrix} 0.4 \\\\ 2 \\end{bmatrix}',
     '\\begin{pmatrix} 2/5 \\\\ 2 \\end{pmatrix}', True),
    ('x^2-1', '(x-1)(x+1)', True), ('(x-1)(x+1)', '(x-1)(x+2)', False),
    ('\\frac{3}{2}', '1\\frac{1}{2}', True), ('-2', '2', False), ('0', '-0', True),
    ('\\emptyset', '\\varnothing', True), ('\\text{yes}', '\\text{no}', False),
    ('\\left[ 1, 2 \\right)', '[1,2)', True), ('90^{\\circ}', '90', True),
    ('.5', '0.5', True), ('\\frac12', '0.5', True), ('1/2', '\\tfrac{1}{2}', True),
    ('85,\\!184', '85184', True), ('\\$4', '4', True), ('30\\%', '30', True),
    ('(-\\infty,-2]\\cup[2,\\infty)', '[2,\\infty) \\cup (-\\infty, -2]', True),
    ('(-\\infty,-2)\\cup[2,\\infty)', '(-\\infty,-2]\\cup[2,\\infty)', False),
    ('\\text{Monday}', 'monday', True), ('3+5i', '5i+3', True),
    ('\\sqrt2/2', '\\frac{\\sqrt{2}}{2}', True), ('1', '', False),
    ('2^{100}', '2^{100}+1', False), ('10^{20}\\pi', '10^{20}\\pi+1', False),
    ('\\sqrt{2}', '1.414', False),
]


def math_verify_equal(candidate: str, reference: str) -> bool:
  """The peer's verdict: math_verify on both answers wrapped in \\boxed{}."""
  # pylint: disable=g-import-not-at-top
  from math_verify import parse, verify
  return bool(verify(parse('\\boxed{' + reference + '}'),
                     parse('\\boxed{' + candidate + '}')))


def disagreements(pairs, ours, theirs):
  """The pairs where our verdict and math_verify's differ, as fixture rows."""
  return [dict(candidate=c, reference=r, label=label, how=how, ours=o,
               math_verify=t)
          for (c, r, label, how), o, t in zip(pairs, ours, theirs) if o != t]


def main():
  """Rewrites fixtures/math_disagreements.json from the seeded pairs."""
  # pylint: disable=g-import-not-at-top
  import pathlib
  from score_jax.rewards import math as math_reward
  here = pathlib.Path(__file__).resolve().parent
  data = here.parents[2] / 'shared' / 'data' / 'math' / 'test.jsonl'
  pairs = build_pairs(data)
  ours = [math_reward.is_equivalent(c, r, timeout_s=5) for c, r, _, _ in pairs]
  theirs = [math_verify_equal(c, r) for c, r, _, _ in pairs]
  hand = [(c, r, label, 'hand-picked') for c, r, label in HAND_PICKED]
  ours += [math_reward.is_equivalent(c, r, timeout_s=5) for c, r, _, _ in hand]
  theirs += [math_verify_equal(c, r) for c, r, _, _ in hand]
  rows = disagreements(pairs + hand, ours, theirs)
  with open(here / 'fixtures' / 'math_disagreements.json', 'w',
            encoding='utf-8') as f:
    json.dump(rows, f, indent=1, ensure_ascii=False)
    f.write('\n')
  print(f'{len(pairs)} + {len(hand)} pairs, {len(rows)} disagreements written')


if __name__ == '__main__':
  main()
