"""Rewards on decoded text: MATH answer equivalence (sympy, time-bounded) and code
tests run in a contained sandbox.

Modules: math (extract_answer, is_equivalent, math_reward), math_normalize,
code (program extraction and test rewards), sandbox, sympy_pool. Importing the
package imports none of them.
"""

__all__ = ['code', 'math', 'math_normalize', 'sandbox', 'sympy_pool']
