"""Tests of score_jax.data (a package, so basenames may repeat elsewhere)."""
