"""Preference tuning on the SCoRe stack: DPO pairs, FactTune confidence, RLAIF judge.

Modules: data (pairs), scorers, judge, online (pairs of the trainer's dpo stage),
offline (DPO on a pairs file), study (the study over seeds that launch/dpo.py runs).
"""
