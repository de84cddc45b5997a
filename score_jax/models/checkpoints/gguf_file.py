"""A fast reader of the GGUF container: metadata, tensor directory, raw tensor bytes.

gguf.GGUFReader builds a numpy view per metadata element, which takes ~15-60 s on
a 262k-token Gemma vocabulary; this parser reads the same header with struct in
under a second. Tensor bytes are a memory map, dequantised by the gguf package.
Layout (GGUF v2/v3, little-endian): magic 'GGUF', version u32, tensor count u64,
kv count u64; kv pairs (string key, u32 type, value; arrays: u32 element type,
u64 count, elements); tensor infos (string name, u32 n_dims, u64 dims (innermost
first), u32 ggml type, u64 offset); padding to general.alignment (default 32);
tensor data.
"""
from __future__ import annotations

import mmap
import pathlib
import struct
from typing import Any

import numpy as np

_SCALAR = {0: '<u1', 1: '<i1', 2: '<u2', 3: '<i2', 4: '<u4', 5: '<i4', 6: '<f4', 7: '?',
           10: '<u8', 11: '<i8', 12: '<f8'}
_STRING, _ARRAY = 8, 9


class GGUFFile:
  """fields: key -> python value (numeric arrays as numpy, string arrays as lists);
  tensors: name -> (ggml type id, numpy-order shape, absolute byte offset)."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    with self.path.open('rb') as f:
      self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    self._pos = 0
    if self._map[:4] != b'GGUF':
      raise ValueError('GGUF magic missing')
    self._pos = 4
    version, n_tensors, n_kv = self._unpack('<IQQ')
    if version not in (2, 3):
      raise ValueError(f'GGUF version {version}; expected 2 or 3 (little-endian)')
    self.fields: dict[str, Any] = {}
    for _ in range(n_kv):
      key = self._string()
      (kind,) = self._unpack('<I')
      self.fields[key] = self._value(kind)
    infos = []
    for _ in range(n_tensors):
      name = self._string()
      (n_dims,) = self._unpack('<I')
      dims = self._unpack(f'<{n_dims}Q')
      kind, offset = self._unpack('<IQ')
      infos.append((name, kind, tuple(reversed(dims)), offset))
    align = int(self.fields.get('general.alignment', 32))
    start = -(-self._pos // align) * align
    self.tensors = {name: (kind, shape, start + offset) for name, kind, shape, offset in infos}

  def _unpack(self, fmt: str) -> tuple:
    out = struct.unpack_from(fmt, self._map, self._pos)
    self._pos += struct.calcsize(fmt)
    return out

  def _string(self) -> str:
    (n,) = self._unpack('<Q')
    s = self._map[self._pos:self._pos + n].decode('utf-8', errors='replace')
    self._pos += n
    return s

  def _value(self, kind: int) -> Any:
    if kind == _STRING:
      return self._string()
    if kind == _ARRAY:
      elem, count = self._unpack('<IQ')
      if elem in _SCALAR:
        dtype = np.dtype(_SCALAR[elem])
        arr = np.frombuffer(self._map, dtype, count, self._pos).copy()
        self._pos += dtype.itemsize * count
        return arr
      return [self._value(elem) for _ in range(count)]
    if kind in _SCALAR:
      dtype = np.dtype(_SCALAR[kind])
      value = np.frombuffer(self._map, dtype, 1, self._pos)[0].item()
      self._pos += dtype.itemsize
      return value
    raise ValueError(f'unknown GGUF value type {kind} at byte {self._pos}')

  def raw(self, name: str, byte_shape: tuple[int, ...]) -> np.ndarray:
    """The tensor's bytes as uint8 of `byte_shape` (a read-only memory map)."""
    _, _, offset = self.tensors[name]
    n = int(np.prod(byte_shape))
    return np.frombuffer(self._map, np.uint8, n, offset).reshape(byte_shape)
