"""Data: tokenizer, tasks (prompt + correction instruction + reward), loaders
for MATH / MBPP / HumanEval / synthetic addition, and grain prompt pipelines.

Modules: tokenizer, tasks (Task, make_task), function_task (FunctionTask: a task
from plain callables), math, code, arithmetic, synthetic, records (JSONL
readers), prompt_format, pipeline (PromptPipeline). Importing the package
imports none of them.
"""

__all__ = ['arithmetic', 'code', 'function_task', 'math', 'pipeline', 'prompt_format',
           'records', 'synthetic', 'tasks', 'tokenizer']
