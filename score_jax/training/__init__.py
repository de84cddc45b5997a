"""Train state, sharding, jitted steps, checkpointing and the online SCoRe loop.

Modules: experiment (Experiment: what a run is built from), attempts (two
scored attempts), loop (the SCoRe loop on explicit parts), build (its parts
from a config), trainer (train_score, train_sft), step, state, checkpoint,
resume, sharding, base_model, base_sft, baselines, study (methods over seeds:
launch/compare.py; preference.study builds on it), report, metric_log,
preemption. Importing the package imports none of them; the library's verbs are
in score_jax itself.
"""

__all__ = ['attempts', 'base_model', 'base_sft', 'baselines', 'build', 'checkpoint',
           'experiment', 'loop', 'metric_log', 'preemption', 'report', 'resume', 'sharding',
           'state', 'step', 'study', 'trainer']
