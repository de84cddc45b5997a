"""Reading XLA's optimized HLO text: which instructions copy a weight, and where.

Used by the decode-step regression tests and the benchmarks to count the
parameter- or KV-cache-sized copies a compiled program makes (XLA moves an
array when a matmul wants another layout than the stored one, or when a loop
slices a stacked one). Works on `jax.jit(f).lower(...).compile().as_text()`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable

import jax

# Ops that move data without computing: a weight-sized one is a weight copy.
COPY_OPS = ('copy', 'transpose', 'slice', 'dynamic-slice')

_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) ')
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* ([\w\-]+)\(')
_CALLED = re.compile(r'(?:calls|body|condition|to_apply)=%([\w.\-]+)')
_BRANCHES = re.compile(r'branch_computations=\{([^}]*)\}')
_BODY = re.compile(r'body=%([\w.\-]+)')


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  dtype: str
  shape: tuple[int, ...]
  opcode: str
  computation: str
  line: str

  @property
  def size(self) -> int:
    return math.prod(self.shape)


def parse(hlo_text: str) -> tuple[list[Instruction], dict[str, set[str]]]:
  """(instructions, callees of each computation) of an HLO module's text."""
  instructions, callees = [], {}
  current = None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m and line.rstrip().endswith('{'):
      current = m.group(1)
      callees[current] = set()
      continue
    m = _INSTRUCTION.match(line)
    if not m or current is None:
      continue
    name, dtype, dims, opcode = m.groups()
    shape = tuple(int(d) for d in dims.split(',') if d)
    instructions.append(Instruction(name, dtype, shape, opcode, current, line.strip()))
    callees[current].update(_CALLED.findall(line))
    for group in _BRANCHES.findall(line):
      callees[current].update(n.strip().lstrip('%') for n in group.split(','))
  return instructions, callees


def _reachable(roots: Iterable[str], callees: dict[str, set[str]]) -> set[str]:
  seen, todo = set(), list(roots)
  while todo:
    c = todo.pop()
    if c not in seen:
      seen.add(c)
      todo.extend(callees.get(c, ()))
  return seen


def loop_computations(hlo_text: str) -> set[str]:
  """Names of every while-loop body and the computations it calls."""
  return _reachable(set(_BODY.findall(hlo_text)), parse(hlo_text)[1])


def weight_sizes(params) -> set[int]:
  """Element counts of each weight matrix: whole, and per layer for stacked ones.

  Vectors (norm scales) are left out: copying one costs nothing.
  """
  sizes = set()
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    names = [str(getattr(k, 'key', k)) for k in path]
    if x.ndim >= 2 + ('layers' in names):
      sizes.add(math.prod(x.shape))
      if 'layers' in names:
        sizes.add(math.prod(x.shape[1:]))
  return sizes


def copies_of_size(hlo_text: str, sizes: set[int],
                   loops_only: bool = False) -> list[Instruction]:
  """Copy-like instructions (COPY_OPS, also inside fusions) of any of `sizes` elements.

  loops_only: only those a while loop runs on every iteration (e.g. every step
  of a decode loop), not those done once around it.
  """
  instructions, _ = parse(hlo_text)
  inside = loop_computations(hlo_text) if loops_only else None
  return [i for i in instructions
          if i.opcode in COPY_OPS and i.size in sizes
          and (inside is None or i.computation in inside)]


def weight_copies(hlo_text: str, params, loops_only: bool = False) -> list[Instruction]:
  """Copy-like instructions of a weight's size (see copies_of_size)."""
  return copies_of_size(hlo_text, weight_sizes(params), loops_only)

