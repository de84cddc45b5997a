"""Tiny random Gemma models of every generation, and their logits, for checkpoint tests.

Imported by the test modules beside it (pytest puts this folder on sys.path).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax.models import causal_mask, get_preset
from score_jax.models.checkpoints import common

CONFIGS = {
    'gemma_mqa': get_preset('gemma_tiny'),
    'gemma_mha': get_preset('gemma_tiny').replace(name='gemma_tiny_mha', num_kv_heads=4),
    'gemma2': get_preset('gemma2_tiny'),
    'gemma3': get_preset('gemma3_tiny'),
}
T = 12


def random_params(cfg, seed=0) -> nnx.State:
  """Params drawn with numpy (host arrays); every norm scale random so the
  1 + scale convention (and GGUF's stored +1) is exercised."""
  _, state = common.abstract_params(cfg)
  rng = np.random.RandomState(seed)

  def draw(x):
    std = 0.3 if len(x.shape) <= 2 else 0.15
    return (std * rng.randn(*x.shape)).astype(x.dtype)

  nnx.replace_by_pure_dict(state, jax.tree.map(draw, state.to_pure_dict()))
  return state


def tokens(cfg, seed=0):
  return np.random.RandomState(seed).randint(0, cfg.vocab_size, (2, T)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  graphdef, _ = common.abstract_params(cfg)

  @jax.jit
  def forward(pure, tokens_BT):
    _, state = common.abstract_params(cfg)
    nnx.replace_by_pure_dict(state, pure)
    model = nnx.merge(graphdef, state)
    pos_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    out, _ = model(tokens_BT, pos_BT, causal_mask(pos_BT, jnp.ones(tokens_BT.shape, bool)))
    return out.astype(jnp.float32)
  return forward


def logits(cfg, params, tokens_BT=None) -> np.ndarray:
  """Our model's float32 logits (B, T, V) for `tokens_BT`.

  The params are gathered to host first, so every call runs the same computation
  (one compile per config) whatever the params' sharding: a round trip that
  preserves the weights gives identical logits.
  """
  tokens_BT = tokens(cfg) if tokens_BT is None else tokens_BT
  pure = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), _pure(params))
  return np.asarray(_forward(cfg)(pure, jnp.asarray(tokens_BT)))


def _pure(params):
  if isinstance(params, nnx.State):
    return params.to_pure_dict()
  return params


def host(state) -> dict:
  return {k: np.asarray(v) for k, v in common.host_params(state).items()}


def tiny_sp_proto(vocab_size: int = 256) -> bytes:
  """A small Gemma-like SentencePiece BPE model: Gemma's special ids (pad 0, eos 1,
  bos 2, unk 3), user-defined turn markers, newline and whitespace-run pieces."""
  from sentencepiece import sentencepiece_model_pb2 as pb  # pylint: disable=g-import-not-at-top
  kind = pb.ModelProto.SentencePiece
  pieces = [('<pad>', kind.CONTROL), ('<eos>', kind.CONTROL), ('<bos>', kind.CONTROL),
            ('<unk>', kind.UNKNOWN), ('<start_of_turn>', kind.USER_DEFINED),
            ('<end_of_turn>', kind.USER_DEFINED), ('\n', kind.USER_DEFINED),
            ('\u2581\u2581', kind.USER_DEFINED), ('\u2581', kind.NORMAL)]
  pieces += [(c, kind.NORMAL) for c in 'abcdefghijklmnopqrstuvwxyz0123456789.,?']
  merges = ['th', 'he', 'an', 'nd', 'at', 'in', '\u2581t', '\u2581a', '\u2581c', '\u2581h',
            '\u2581th', '\u2581the', 'and', '\u2581and', '\u2581ca', '\u2581cat', '\u2581ha',
            '\u2581hat', 'ing', '\u2581in']
  pieces += [(m, kind.NORMAL) for m in merges]
  pieces += [(f'<unused{i}>', kind.USER_DEFINED) for i in range(vocab_size - len(pieces))]
  proto = pb.ModelProto()
  for i, (piece, t) in enumerate(pieces):
    p = proto.pieces.add()
    p.piece, p.type, p.score = piece, t, (0.0 if t != kind.NORMAL else -float(i))
  spec = proto.trainer_spec
  spec.model_type = pb.TrainerSpec.BPE
  spec.vocab_size = vocab_size
  spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 3, 2, 1, 0
  spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = (
      '<unk>', '<bos>', '<eos>', '<pad>')
  spec.allow_whitespace_only_pieces = True
  proto.normalizer_spec.name = 'identity'
  proto.normalizer_spec.add_dummy_prefix = False
  proto.normalizer_spec.remove_extra_whitespaces = False
  return proto.SerializeToString()
