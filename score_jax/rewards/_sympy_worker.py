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


def _load():
  """Imports the heavy modules; returns the comparison function."""
  # pylint: disable=g-import-not-at-top
  import sympy
  from latex2sympy2_extended import latex2sympy
  # pylint: enable=g-import-not-at-top
  imaginary = sympy.Symbol('i')

  def parse(latex):
    expr = latex2sympy(latex)
    if isinstance(expr, sympy.Basic) and imaginary in expr.free_symbols:
      expr = expr.subs(imaginary, sympy.I)
    return expr

  def numbers_close(x, y):
    """Exact for rationals; else |x - y| <= 1e-9 * clip(|y|, 1, 1e6)."""
    if x.is_Rational and y.is_Rational:
      return bool(x == y)
    xv, yv = sympy.N(x, 30), sympy.N(y, 30)
    if not (xv.is_finite and yv.is_finite):  # oo, -oo, zoo, nan
      return bool(xv == yv)
    difference = sympy.N(x - y, 30)  # Exact subtraction first: no cancellation.
    scale = min(max(1, abs(yv)), 10**6)
    return bool(abs(difference) <= sympy.Float(1e-9) * scale)

  def same_elements(xs, ys, ordered):
    xs, ys = list(xs), list(ys)
    if len(xs) != len(ys):
      return False
    if ordered:
      return all(same(x, y) for x, y in zip(xs, ys))
    for x in xs:  # Greedy matching is exact: equality is transitive.
      match = next((k for k, y in enumerate(ys) if same(x, y)), None)
      if match is None:
        return False
      ys.pop(match)
    return True

  def same(x, y):
    if isinstance(x, (tuple, list)) or isinstance(y, (tuple, list)):
      return (type(x) is type(y)) and same_elements(x, y, True)
    if isinstance(x, sympy.MatrixBase) or isinstance(y, sympy.MatrixBase):
      return (isinstance(x, sympy.MatrixBase) and
              isinstance(y, sympy.MatrixBase) and x.shape == y.shape and
              same_elements(x, y, True))
    if isinstance(x, sympy.Interval) or isinstance(y, sympy.Interval):
      return (isinstance(x, sympy.Interval) and isinstance(y, sympy.Interval)
              and x.left_open == y.left_open and x.right_open == y.right_open
              and same(x.start, y.start) and same(x.end, y.end))
    if isinstance(x, sympy.Set) or isinstance(y, sympy.Set):
      return (type(x) is type(y)) and (
          x == y or same_elements(x.args, y.args, False))
    if isinstance(x, sympy.core.relational.Relational) or isinstance(
        y, sympy.core.relational.Relational):
      if type(x) is not type(y):
        return False
      if isinstance(x, sympy.Eq):
        dx, dy = x.lhs - x.rhs, y.lhs - y.rhs
        return same(dx, dy) or same(dx, -dy)
      return same(x.lhs, y.lhs) and same(x.rhs, y.rhs)
    if not (isinstance(x, sympy.Expr) and isinstance(y, sympy.Expr)):
      return x == y
    if x == y:
      return True
    difference = x - y
    if difference == 0:
      return True
    if not x.free_symbols and not y.free_symbols:
      return numbers_close(x, y)
    return sympy.simplify(difference) == 0

  def equal(a, b):
    return bool(same(parse(a), parse(b)))

  equal('\\frac{1}{2}', '0.5')  # Warm the lazy imports inside sympy.
  equal('(x+1)^2', 'x^2+2x+1')
  return equal


def main():
  if len(sys.argv) > 1 and int(sys.argv[1]) > 0:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  sys.setrecursionlimit(5000)
  equal = _load()
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
