"""GGUF files of Gemma, Gemma 2 and Gemma 3 (llama.cpp's format): import and export.

Import dequantises every tensor to float32 with the `gguf` package (any type it
knows: F32, F16, BF16, Q4_K, Q5_0, Q6_K, Q8_0, ...) and maps it through
hf_layout, with names from gguf's own TensorNameMap. The conventions of
llama.cpp's convert_hf_to_gguf.py for Gemma (GemmaModel, Gemma2Model,
Gemma3Model .modify_tensors), undone here:
  * every '*norm.weight' is stored as 1 + w (llama.cpp's RMSNorm multiplies by
    the weight alone): we subtract 1 (as transformers' Gemma2TensorProcessor does);
  * q/k are NOT permuted for Gemma (only LlamaModel permutes; Gemma's RoPE is the
    rotate-half layout llama.cpp calls NEOX), so no un-permutation;
  * the embedding is cut to the tokenizer's vocabulary (Gemma 3): the preset's
    vocab_size must equal the number of tokens in the file.
The file's hyperparameters ({arch}.block_count, ...) are checked against the
preset, each mismatch named.

Export (save_gguf) writes the same conventions with float32 tensors, and the
tokenizer when given a SentencePiece model.
"""
from __future__ import annotations

import functools
import math
import pathlib
import struct
from typing import Any, Mapping

import numpy as np
from flax import nnx

from score_jax.models import hf_convert
from score_jax.models.checkpoints import common, gguf_file, gguf_tokenizer
from score_jax.models.checkpoints.hf_layout import hf_plan
from score_jax.models.config import AttentionType, ModelConfig

_ARCH = {1: 'gemma', 2: 'gemma2', 3: 'gemma3'}
NORM_SHIFT = 1.0


def _gguf():
  try:
    import gguf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("GGUF support needs the 'gguf' package: "
                      "pip install 'score_jax[gguf]' (or pip install gguf)") from e
  return gguf


class GGUFReader:
  """Tensors (dequantised to float32 on read) and metadata of a .gguf file."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self.source = str(self.path)
    if not self.path.is_file():
      raise common.CheckpointError(f'{self.path}: GGUF file not found')
    try:
      self._file = gguf_file.GGUFFile(self.path)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
      raise common.CheckpointError(f'{self.path}: not a GGUF file ({e})') from e
    self._shapes = {name: shape for name, (_, shape, _) in self._file.tensors.items()}

  def shapes(self) -> Mapping[str, tuple[int, ...]]:
    return self._shapes

  def read(self, key: str) -> np.ndarray:
    gguf = _gguf()
    kind, shape, _ = self._file.tensors[key]
    qtype = gguf.GGMLQuantizationType(kind)
    raw = self._file.raw(key, gguf.quants.quant_shape_to_byte_shape(shape, qtype))
    return np.asarray(gguf.dequantize(raw, qtype), np.float32).reshape(shape)

  def field(self, key: str, default: Any = None) -> Any:
    return self._file.fields.get(key, default)

  def field_array(self, key: str) -> np.ndarray | None:
    value = self._file.fields.get(key)
    return None if value is None else np.asarray(value)

  def field_strings(self, key: str) -> list[str] | None:
    return self._file.fields.get(key)


@functools.lru_cache(maxsize=1)
def _open_cached(path: str, mtime_ns: int, size: int) -> GGUFReader:
  del mtime_ns, size  # cache keys: a rewritten file is read again
  return GGUFReader(path)


def open_gguf(path: str | pathlib.Path) -> GGUFReader:
  """A GGUFReader, shared by the weights and tokenizer of the same file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise common.CheckpointError(f'{path}: GGUF file not found')
  st = path.stat()
  return _open_cached(str(path.absolute()), st.st_mtime_ns, st.st_size)


def _expected_fields(cfg: ModelConfig) -> dict[str, Any]:
  """{arch}.* metadata llama.cpp writes for a Gemma model, from the preset."""
  gen = common.generation(cfg)
  exp = {'block_count': cfg.num_layers, 'embedding_length': cfg.embed_dim,
         'feed_forward_length': cfg.hidden_dim, 'attention.head_count': cfg.num_heads,
         'attention.head_count_kv': cfg.num_kv_heads,
         'attention.key_length': cfg.head_dim, 'attention.value_length': cfg.head_dim,
         'attention.layer_norm_rms_epsilon': cfg.norm_eps,
         'rope.freq_base': cfg.rope_base_global}
  if gen >= 2:
    exp['attention.sliding_window'] = cfg.sliding_window
  if gen == 2:
    exp['attn_logit_softcapping'] = cfg.attn_logits_softcap
    exp['final_logit_softcapping'] = cfg.final_logit_softcap
  if gen == 3:
    exp['rope.scaling.factor'] = cfg.rope_scale_global
    exp['rope.freq_base_swa'] = cfg.rope_base_local
  return exp


def check_metadata(reader: GGUFReader, cfg: ModelConfig) -> None:
  """Raises CheckpointError naming every GGUF hyperparameter that differs from `cfg`."""
  arch = reader.field('general.architecture')
  want = _ARCH[common.generation(cfg)]
  if arch != want:
    raise common.CheckpointError(
        f'{reader.source}: general.architecture={arch!r}; preset {cfg.name!r} '
        f'is Gemma {common.generation(cfg)} (expected {want!r})')
  problems = []
  for name, expected in _expected_fields(cfg).items():
    found = reader.field(f'{arch}.{name}')
    if found is None or expected is None:
      continue  # absent from the file: llama.cpp's default applies
    if isinstance(expected, float) or isinstance(found, float):
      same = math.isclose(float(found), float(expected), rel_tol=1e-5)
    else:
      same = int(found) == int(expected)
    if not same:
      problems.append(f'field {arch}.{name}={found}; expected {expected}')
  if problems:
    raise common.CheckpointError(f'{reader.source}: does not match preset {cfg.name!r}:\n  '
                                 + '\n  '.join(problems))


def gguf_plan(cfg: ModelConfig, num_layers: int | None = None) -> common.Plan:
  gguf = _gguf()
  arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == _ARCH[common.generation(cfg)])
  names = gguf.get_tensor_name_map(arch, num_layers or cfg.num_layers)

  def name(hf: str) -> str:
    mapped = names.get_name(hf)
    if mapped is None:
      raise common.CheckpointError(f'gguf has no tensor name for {hf!r} in arch {arch}')
    return mapped + '.weight'

  return hf_plan(cfg, name, norm_shift=NORM_SHIFT)


def load_gguf(path: str | pathlib.Path, cfg: ModelConfig, **assemble_kw) -> nnx.State:
  """Our param State from a Gemma GGUF file (quantised tensors dequantised)."""
  reader = open_gguf(path)
  check_metadata(reader, cfg)
  return common.assemble(cfg, gguf_plan(cfg), reader, **assemble_kw)


def load_tokenizer_proto(path: str | pathlib.Path) -> bytes:
  """The SentencePiece ModelProto (serialized) rebuilt from the file's vocabulary."""
  return gguf_tokenizer.proto_from_gguf(open_gguf(path)).SerializeToString()


def _check_expressible(cfg: ModelConfig) -> None:
  """GGUF has no field for some of our settings; llama.cpp hard-codes them per arch."""
  gen = common.generation(cfg)
  problems = []
  # llama.cpp scales queries by 1/sqrt(head_dim), or 1/sqrt(D/N) for the 27B models.
  is_27b = (gen, cfg.num_layers) in ((2, 46), (3, 62))
  allowed = {None, cfg.head_dim} | ({cfg.embed_dim // cfg.num_heads} if is_27b else set())
  if cfg.query_pre_attn_scalar not in allowed:
    problems.append(f'query_pre_attn_scalar={cfg.query_pre_attn_scalar} (llama.cpp uses '
                    f'head_dim={cfg.head_dim})')
  if gen < 3 and cfg.rope_base_local != cfg.rope_base_global:
    problems.append('rope_base_local != rope_base_global (one RoPE base before Gemma 3)')
  if gen == 1 and AttentionType.LOCAL_SLIDING in cfg.attention_types:
    problems.append('sliding-window layers (Gemma 1 in llama.cpp has none)')
  if problems:
    raise common.CheckpointError(f'GGUF cannot express config {cfg.name!r}: '
                                 + '; '.join(problems))


def save_gguf(path: str | pathlib.Path, cfg: ModelConfig, state,
              tokenizer_proto: bytes | None = None) -> pathlib.Path:
  """Writes our params as a float32 GGUF file in llama.cpp's Gemma conventions."""
  gguf = _gguf()
  _check_expressible(cfg)
  gen = common.generation(cfg)
  arch_name = _ARCH[gen]
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = gguf.GGUFWriter(str(path), arch_name)
  writer.add_name(cfg.name)
  writer.add_context_length(8192)
  writer.add_embedding_length(cfg.embed_dim)
  writer.add_block_count(cfg.num_layers)
  writer.add_feed_forward_length(cfg.hidden_dim)
  writer.add_head_count(cfg.num_heads)
  writer.add_head_count_kv(cfg.num_kv_heads)
  writer.add_key_length(cfg.head_dim)
  writer.add_value_length(cfg.head_dim)
  writer.add_layer_norm_rms_eps(cfg.norm_eps)
  writer.add_file_type(gguf.LlamaFileType.ALL_F32)
  if gen >= 2:
    writer.add_sliding_window(cfg.sliding_window)
  if gen == 2:
    writer.add_attn_logit_softcapping(cfg.attn_logits_softcap)
    writer.add_final_logit_softcapping(cfg.final_logit_softcap)
  if gen == 3:
    writer.add_rope_freq_base(cfg.rope_base_global)
    writer.add_rope_freq_base_swa(cfg.rope_base_local)
    if cfg.rope_scale_global != 1.0:
      writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
      writer.add_rope_scaling_factor(cfg.rope_scale_global)
  if tokenizer_proto is not None:
    gguf_tokenizer.add_to_writer(writer, tokenizer_proto)

  arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
  names = gguf.get_tensor_name_map(arch, cfg.num_layers)
  for hf_key, value in hf_convert.params_to_hf_state_dict(cfg, state).items():
    module = hf_key[:-len('.weight')]
    value = np.asarray(value, np.float32)
    if module.endswith('norm'):
      value = value + NORM_SHIFT
    writer.add_tensor(names.get_name(module) + '.weight', np.ascontiguousarray(value))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path
