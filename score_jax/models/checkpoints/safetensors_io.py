"""Hugging Face safetensors checkpoints of Gemma 1/2/3/4: import and export.

Import accepts a model.safetensors file, a directory holding one, or a sharded
directory (model.safetensors.index.json naming the shard of every tensor). Keys
may sit under any of the prefixes transformers has used for the text decoder:
  'model.'                 Gemma/Gemma2ForCausalLM, Gemma3ForCausalLM (text-only)
  'model.language_model.'  Gemma3/Gemma4ForConditionalGeneration (transformers >= 4.52)
  'language_model.model.'  Gemma3ForConditionalGeneration (older saves)
The vision/audio towers and projectors of multimodal checkpoints are ignored, and so
are the k/v weights of Gemma 4's KV-shared layers (transformers ignores them too). An
lm_head.weight, if stored, must equal the embedding (Gemma ties them).

Export writes model.safetensors (or shards plus the index), config.json from
hf_convert.hf_config, so transformers' from_pretrained loads the result.
"""
from __future__ import annotations

import json
import pathlib
from typing import Mapping

import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from score_jax.models import gemma4_convert, hf_convert
from score_jax.models.checkpoints import common
from score_jax.models.checkpoints.hf_layout import gemma4_plan, hf_plan
from score_jax.models.config import ModelConfig

INDEX_NAME = 'model.safetensors.index.json'
SINGLE_NAME = 'model.safetensors'
# prefix of the decoder -> key of its (tied) output head
_PREFIXES = {'model.language_model.': 'lm_head.weight',
             'language_model.model.': 'language_model.lm_head.weight',
             'model.': 'lm_head.weight'}
_IGNORED_BUFFERS = ('rotary_emb.', 'embed_scale')


def _files(path: pathlib.Path) -> tuple[list[pathlib.Path], str]:
  """The safetensors files of a checkpoint, and what to call it in errors."""
  if path.is_file() and path.name.endswith('.json'):
    index, root = path, path.parent
  elif path.is_file():
    return [path], str(path)
  elif (path / INDEX_NAME).is_file():
    index, root = path / INDEX_NAME, path
  elif (path / SINGLE_NAME).is_file():
    return [path / SINGLE_NAME], str(path / SINGLE_NAME)
  else:
    raise common.CheckpointError(
        f'{path}: expected a .safetensors file, or a directory with {SINGLE_NAME} '
        f'or {INDEX_NAME}')
  try:
    weight_map = json.loads(index.read_text())['weight_map']
  except (ValueError, KeyError) as e:
    raise common.CheckpointError(f'{index}: not a safetensors index; expected JSON with '
                                 f"a 'weight_map' object ({e!r})") from e
  names = sorted(set(weight_map.values()))
  missing = [n for n in names if not (root / n).is_file()]
  if missing:
    raise common.CheckpointError(f'{index}: shard file(s) {missing} named in weight_map '
                                 'are missing')
  return [root / n for n in names], str(index)


class SafetensorsReader:
  """Lazily reads tensors (memory-mapped) from one or several safetensors files."""

  def __init__(self, path: str | pathlib.Path):
    files, self.source = _files(pathlib.Path(path))
    self._handles, self._where, self._shapes = [], {}, {}
    for file in files:
      try:
        handle = safe_open(str(file), framework='numpy')
      except Exception as e:  # safetensors raises SafetensorError/OSError
        raise common.CheckpointError(f'{file}: not a safetensors file ({e})') from e
      self._handles.append(handle)
      for key in handle.keys():
        if key in self._where:
          raise common.CheckpointError(f'{file}: key {key!r} is also in another shard')
        self._where[key] = handle
        self._shapes[key] = tuple(handle.get_slice(key).get_shape())

  def shapes(self) -> Mapping[str, tuple[int, ...]]:
    return self._shapes

  def read(self, key: str) -> np.ndarray:
    return self._where[key].get_tensor(key)


def detect_prefix(reader: SafetensorsReader) -> str:
  """The key prefix of the text decoder in `reader`."""
  for prefix in _PREFIXES:
    if prefix + 'embed_tokens.weight' in reader.shapes():
      return prefix
  raise common.CheckpointError(
      f'{reader.source}: no embed_tokens.weight under any of {list(_PREFIXES)}; not a '
      f'Gemma checkpoint in HF layout? (keys start {sorted(reader.shapes())[:3]})')


def load_safetensors(path: str | pathlib.Path, cfg: ModelConfig, **assemble_kw) -> nnx.State:
  """Our param State from an HF Gemma/Gemma2/Gemma3 safetensors checkpoint."""
  reader = SafetensorsReader(path)
  prefix = detect_prefix(reader)
  head = _PREFIXES[prefix]
  if cfg.architecture == 'gemma4':
    plan = gemma4_plan(cfg, lambda hf: prefix + hf)
  else:
    plan = hf_plan(cfg, lambda hf: prefix + hf[len('model.'):] + '.weight')

  def ignore(key: str) -> bool:
    if key == head:
      return True
    if key.startswith(prefix):
      return (any(b in key for b in _IGNORED_BUFFERS)
              or gemma4_convert.unused_hf_key(cfg, key[len(prefix):]))
    return True  # outside the decoder: a multimodal checkpoint's vision side

  state = common.assemble(cfg, plan, reader, ignore=ignore, **assemble_kw)
  if head in reader.shapes():
    embed_key = prefix + 'embed_tokens.weight'
    if not np.array_equal(reader.read(head), reader.read(embed_key)):
      raise common.CheckpointError(f'{reader.source}: {head!r} differs from {embed_key!r}; '
                                   'Gemma ties the output head to the embedding and so do we')
  return state


def save_safetensors(path: str | pathlib.Path, cfg: ModelConfig, state, *,
                     max_shard_bytes: int | None = None,
                     dtype: str | None = None) -> pathlib.Path:
  """Writes an HF checkpoint directory: config.json and model.safetensors (or shards).

  max_shard_bytes: split into model-0000i-of-0000n.safetensors files plus
  model.safetensors.index.json when the tensors exceed this size.
  dtype: cast every tensor (e.g. 'bfloat16'); default: keep the param dtype.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  sd = hf_convert.params_to_hf_state_dict(cfg, state)
  if dtype is not None:
    sd = {k: v.astype(np.dtype(dtype) if dtype != 'bfloat16' else _bf16()) for k, v in sd.items()}
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for key, value in sd.items():
    if max_shard_bytes and shards[-1] and size + value.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][key] = value
    size += value.nbytes
  meta = {'format': 'pt'}
  if len(shards) == 1:
    save_file(shards[0], str(path / SINGLE_NAME), metadata=meta)
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      name = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
      save_file(shard, str(path / name), metadata=meta)
      weight_map.update({key: name for key in shard})
    index = {'metadata': {'total_size': int(sum(v.nbytes for v in sd.values()))},
             'weight_map': weight_map}
    (path / INDEX_NAME).write_text(json.dumps(index, indent=2))
  config = hf_convert.hf_config(cfg)
  config.architectures = [_ARCHITECTURES[hf_convert.hf_model_type(cfg)]]
  if dtype is not None:
    config.dtype = dtype
  config.save_pretrained(str(path))
  return path


def save_tokenizer(path: str | pathlib.Path, proto_bytes: bytes) -> pathlib.Path:
  """Writes tokenizer.model and a tokenizer_config.json (BOS added, as Gemma expects)
  into an HF checkpoint directory, for transformers' AutoTokenizer."""
  from sentencepiece import sentencepiece_model_pb2 as sp_pb2  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  proto = sp_pb2.ModelProto()
  proto.ParseFromString(proto_bytes)
  spec = proto.trainer_spec
  (path / 'tokenizer.model').write_bytes(proto_bytes)
  config = {'tokenizer_class': 'GemmaTokenizer', 'add_bos_token': True,
            'add_eos_token': False}
  for name in ('bos', 'eos', 'pad', 'unk'):
    if getattr(spec, f'{name}_id') >= 0:
      config[f'{name}_token'] = proto.pieces[getattr(spec, f'{name}_id')].piece
  (path / 'tokenizer_config.json').write_text(json.dumps(config, indent=2))
  return path / 'tokenizer.model'


_ARCHITECTURES = {'gemma': 'GemmaForCausalLM', 'gemma2': 'Gemma2ForCausalLM',
                  'gemma3_text': 'Gemma3ForCausalLM', 'gemma4_text': 'Gemma4ForCausalLM'}


def _bf16():
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  return ml_dtypes.bfloat16
