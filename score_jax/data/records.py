"""Reading JSON-lines files with errors that name the file, line and field.

Every loader in score_jax.data reads through these helpers, so a malformed
line anywhere reports `path:line: ...` the same way.
"""
from __future__ import annotations

import gzip
import json
import os
import pathlib
from typing import Any, Iterator

_MISSING = object()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict]]:
  """Yields (`'path:line'`, record) for each non-blank line of a JSONL file.

  Args:
    path: a `.jsonl` file, or a gzip-compressed one ending in `.gz`.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a line is not valid JSON or not a JSON object.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: file not found')
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rt', encoding='utf-8') as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f'{path}:{line_no}'
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{where}: invalid JSON ({e.msg} at column '
                         f'{e.colno}); expected one JSON object per line'
                        ) from e
      if not isinstance(record, dict):
        raise ValueError(f'{where}: expected a JSON object, got '
                         f'{type(record).__name__}')
      yield where, record


def read_json(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict]]:
  """Yields (where, record) from a JSON file holding one object or an array.

  `where` is `path` for a single object and `path:[i]` for array items.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: file not found')
  try:
    data = json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: invalid JSON ({e.msg})') from e
  if isinstance(data, dict):
    yield str(path), data
    return
  if not isinstance(data, list):
    raise ValueError(f'{path}: expected a JSON object or array of objects, '
                     f'got {type(data).__name__}')
  for i, record in enumerate(data):
    if not isinstance(record, dict):
      raise ValueError(f'{path}:[{i}]: expected a JSON object, got '
                       f'{type(record).__name__}')
    yield f'{path}:[{i}]', record


def get_field(record: dict, name: str, expected: type | tuple[type, ...],
              where: str, default: Any = _MISSING) -> Any:
  """Returns `record[name]`, checked to be an instance of `expected`.

  Args:
    record: the parsed JSON object.
    name: the field to read.
    expected: the accepted type(s); bool is never accepted as int.
    where: the `path:line` prefix for errors.
    default: returned when the field is absent; required when not given.

  Raises:
    ValueError: the field is missing (and has no default) or has the wrong type.
  """
  if name not in record:
    if default is _MISSING:
      raise ValueError(f"{where}: field '{name}' missing; expected "
                       f'{_type_names(expected)}')
    return default
  value = record[name]
  types = expected if isinstance(expected, tuple) else (expected,)
  if not isinstance(value, types) or (isinstance(value, bool) and
                                      bool not in types):
    raise ValueError(f"{where}: field '{name}' is {type(value).__name__} "
                     f'{_short(value)}; expected {_type_names(expected)}')
  return value


def get_str_list(record: dict, name: str, where: str,
                 default: Any = _MISSING) -> tuple[str, ...]:
  """Returns `record[name]` as a tuple of strings, checking every item."""
  value = get_field(record, name, list, where, default)
  if value is default:
    return value
  for i, item in enumerate(value):
    if not isinstance(item, str):
      raise ValueError(f"{where}: field '{name}[{i}]' is "
                       f'{type(item).__name__}; expected str')
  return tuple(value)


def _type_names(expected: type | tuple[type, ...]) -> str:
  types = expected if isinstance(expected, tuple) else (expected,)
  return ' or '.join(t.__name__ for t in types)


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + '...'
