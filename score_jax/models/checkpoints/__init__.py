"""Open Gemma weights: Flax (published layout), HF safetensors and GGUF, in and out.

  load_pretrained(cfg_model) -> (ModelConfig, params, tokenizer)
  load_params(path, cfg, fmt='auto', shardings=None, mesh=None) -> nnx.State
  save_orbax / save_flax / save_safetensors / save_gguf (cfg, params) exports
"""
from score_jax.models.checkpoints.common import (CheckpointError, fsdp_mesh,
                                                 fsdp_shardings)
from score_jax.models.checkpoints.flax_format import (load_flax, load_orbax, save_flax,
                                                      save_orbax)
from score_jax.models.checkpoints.gguf_io import load_gguf, load_tokenizer_proto, save_gguf
from score_jax.models.checkpoints.pretrained import (FORMATS, build_model, detect_format,
                                                     load_params, load_pretrained,
                                                     resolve_checkpoint)
from score_jax.models.checkpoints.safetensors_io import (load_safetensors, save_safetensors,
                                                         save_tokenizer)

__all__ = ['CheckpointError', 'FORMATS', 'build_model', 'detect_format', 'fsdp_mesh',
           'fsdp_shardings', 'load_flax', 'load_gguf', 'load_orbax', 'load_params',
           'load_pretrained', 'load_safetensors', 'load_tokenizer_proto',
           'resolve_checkpoint', 'save_flax', 'save_gguf', 'save_orbax',
           'save_safetensors', 'save_tokenizer']
