"""Preference tuning on the SCoRe stack: DPO pairs, FactTune confidence, RLAIF judge."""
