"""Jitted prefill / while-loop decode, sampling rules and two-turn correction traces."""
from score_jax.sampling.config import SamplingConfig
from score_jax.sampling.decode import DecodeState
from score_jax.sampling.rollout import Generation, Sampler
from score_jax.sampling.trace import CorrectionTrace, pack_slots, pack_traces, turn_ids

__all__ = ['SamplingConfig', 'DecodeState', 'Generation', 'Sampler', 'CorrectionTrace',
           'pack_slots', 'pack_traces', 'turn_ids']
