"""score_jax: SCoRe (Kumar et al., arXiv 2409.12917) in JAX/Flax NNX."""

__version__ = '0.1.0'
