"""Data: tokenizer, tasks (prompt + correction instruction + reward), loaders
for MATH / MBPP / HumanEval / synthetic addition, and grain prompt pipelines.

Modules: tokenizer, tasks (Task, make_task), math, code, synthetic, records
(JSONL readers), pipeline (PromptPipeline).
"""
