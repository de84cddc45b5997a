"""A worker process of `sympy_pool`: is LaTeX answer a equal to answer b?

Started as a script (`python -I _sympy_worker.py MEMORY_BYTES`); it caps its
own address space, imports sympy and latex2sympy2_extended, warms them up,
prints `ready`, then answers one JSON request per line on stdin,
{"a": latex, "b": latex}, with one JSON line {"equal": bool} on stdout. The
parent kills it when an answer is late; nothing here needs to be fast.
"""
import json
import resource
import sys


# sympy and latex2sympy2_extended are imported inside the functions below, not
# at the top: main() caps the address space first, and _load() pays for the
# imports once (later ones are dictionary look-ups).
# pylint: disable=g-import-not-at-top


def _parse(latex):
  """latex2sympy's expression of `latex`, with the symbol i read as sqrt(-1)."""
  import sympy
  from latex2sympy2_extended import latex2sympy
  expr = latex2sympy(latex)
  imaginary = sympy.Symbol('i')
  if isinstance(expr, sympy.Basic) and imaginary in expr.free_symbols:
    expr = expr.subs(imaginary, sympy.I)
  return expr


def _numbers_close(x, y):
  """Exact for rationals; else |x - y| <= 1e-9 * clip(|y|, 1, 1e6)."""
  import sympy
  if x.is_Rational and y.is_Rational:
    return bool(x == y)
  xv, yv = sympy.N(x, 30), sympy.N(y, 30)
  if not (xv.is_finite and yv.is_finite):  # oo, -oo, zoo, nan
    return bool(xv == yv)
  difference = sympy.N(x - y, 30)  # Exact subtraction first: no cancellation.
  scale = min(max(1, abs(yv)), 10**6)
  return bool(abs(difference) <= sympy.Float(1e-9) * scale)


def _same_elements(xs, ys, ordered):
  """Pairwise _same, in order or (ordered False) as multisets."""
  xs, ys = list(xs), list(ys)
  if len(xs) != len(ys):
    return False
  if ordered:
    return all(_same(x, y) for x, y in zip(xs, ys))
  for x in xs:  # Greedy matching is exact: equality is transitive.
    match = next((k for k, y in enumerate(ys) if _same(x, y)), None)
    if match is None:
      return False
    ys.pop(match)
  return True


def _same_relation(x, y):
  """Relations of one type; an equation also matches its sides swapped."""
  import sympy
  if type(x) is not type(y):
    return False
  if isinstance(x, sympy.Eq):
    dx, dy = x.lhs - x.rhs, y.lhs - y.rhs
    return _same(dx, dy) or _same(dx, -dy)
  return _same(x.lhs, y.lhs) and _same(x.rhs, y.rhs)


def _same_scalar(x, y):
  """Equal as written, numerically close, or x - y simplifies to 0."""
  import sympy
  if not (isinstance(x, sympy.Expr) and isinstance(y, sympy.Expr)):
    return x == y
  if x == y:
    return True
  difference = x - y
  if difference == 0:
    return True
  if not x.free_symbols and not y.free_symbols:
    return _numbers_close(x, y)
  return sympy.simplify(difference) == 0


def _same(x, y):
  """x and y (parsed answers) are the same: containers element by element."""
  import sympy
  if isinstance(x, (tuple, list)) or isinstance(y, (tuple, list)):
    return (type(x) is type(y)) and _same_elements(x, y, True)
  if isinstance(x, sympy.MatrixBase) or isinstance(y, sympy.MatrixBase):
    return (isinstance(x, sympy.MatrixBase) and
            isinstance(y, sympy.MatrixBase) and x.shape == y.shape and
            _same_elements(x, y, True))
  if isinstance(x, sympy.Interval) or isinstance(y, sympy.Interval):
    return (isinstance(x, sympy.Interval) and isinstance(y, sympy.Interval)
            and x.left_open == y.left_open and x.right_open == y.right_open
            and _same(x.start, y.start) and _same(x.end, y.end))
  if isinstance(x, sympy.Set) or isinstance(y, sympy.Set):
    return (type(x) is type(y)) and (
        x == y or _same_elements(x.args, y.args, False))
  relational = sympy.core.relational.Relational
  if isinstance(x, relational) or isinstance(y, relational):
    return _same_relation(x, y)
  return _same_scalar(x, y)


def equal(a, b):
  """Whether LaTeX answers a and b are mathematically the same."""
  return bool(_same(_parse(a), _parse(b)))


def _load():
  """Imports the heavy modules and warms them up (before `ready` is printed)."""
  import sympy  # pylint: disable=unused-import
  import latex2sympy2_extended  # pylint: disable=unused-import
  equal('\\frac{1}{2}', '0.5')  # Warm the lazy imports inside sympy.
  equal('(x+1)^2', 'x^2+2x+1')


def main():
  if len(sys.argv) > 1 and int(sys.argv[1]) > 0:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  sys.setrecursionlimit(5000)
  _load()
  print('ready', flush=True)
  while (line := sys.stdin.readline()):
    request = json.loads(line)
    try:
      answer = {'equal': equal(request['a'], request['b'])}
    except Exception as e:  # pylint: disable=broad-except
      answer = {'equal': False, 'error': f'{type(e).__name__}: {e}'[:300]}
    print(json.dumps(answer), flush=True)


if __name__ == '__main__':
  main()
