"""Whether a run may continue the checkpoint in its workdir, and what it says when not.

Every checkpoint's meta holds the run's config fingerprint: each config field
that changes what is trained (model, tokenizer, task, data, sampling, loss,
optim, the stage schedule, base_sft, seed), flattened to dotted names.
Fields that do not change the trained weights are left out: workdir, checkpoint,
mesh (a preempted run may come back on another slice; the math is the same up
to reduction order), eval, and the logging cadence. A resume whose fingerprint
differs is refused in one line naming the fields, unless
config.checkpoint.force_resume, which continues and records the change.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import jax
from absl import logging
from flax import nnx

from score_jax.training.checkpoint import ResumeRefused

_NOT_TRAINING = ('workdir', 'checkpoint', 'mesh', 'eval', 'train.log_every',
                 'train.eval_every')
_FORCE = '--config.checkpoint.force_resume=True'

# The logical axis of a parameter dimension -> the config field that sizes it.
_AXIS_FIELD = {
    'layers': 'model.overrides.num_layers', 'embed': 'model.overrides.embed_dim',
    'mlp': 'model.overrides.hidden_dim', 'heads': 'model.overrides.num_heads',
    'kv_heads': 'model.overrides.num_kv_heads', 'head_dim': 'model.overrides.head_dim',
    'vocab': 'tokenizer.vocab_size (or model.overrides.vocab_size)',
}


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f'{prefix}{k}.'))
  return out


def fingerprint(cfg, schedule: Sequence[tuple[str, int]], seed: int) -> dict[str, Any]:
  """{dotted field: JSON value} of the fields that change what is trained.

  schedule and seed: the ones the run really uses (train_score may override the
  config's).
  """
  flat = _flat(cfg.to_dict())
  flat = {k: v for k, v in flat.items()
          if not any(k == p or k.startswith(p + '.') for p in _NOT_TRAINING)}
  flat['train.schedule'] = [[str(s), int(n)] for s, n in schedule]
  flat['seed'] = int(seed)
  # Through JSON, so tuples and lists (and what the checkpoint holds) compare equal.
  return json.loads(json.dumps(flat, sort_keys=True, default=repr))


_UNSET = object()


def _show(v: Any, limit: int = 60) -> str:
  s = json.dumps(v) if v is not _UNSET else '(unset)'
  return s if len(s) <= limit else s[:limit] + '...'



def config_changes(stored: dict, current: dict) -> list[str]:
  """'field: old -> new' for each field whose value differs."""
  keys = sorted(set(stored) | set(current))
  return [f'{k}: {_show(stored.get(k, _UNSET))} -> {_show(current.get(k, _UNSET))}'
          for k in keys if stored.get(k, _UNSET) != current.get(k, _UNSET)]


def check_config(where: str, step: int, meta: dict, current: dict, force: bool) -> list[str]:
  """The changed fields (empty: the same config); raises ResumeRefused unless `force`."""
  stored = meta.get('config')
  if stored is None:
    changes = ['(the checkpoint has no config fingerprint: it predates them)']
  else:
    changes = config_changes(stored, current)
  if not changes:
    return []
  shown = '; '.join(changes[:6]) + (f'; and {len(changes) - 6} more' if len(changes) > 6 else '')
  if force:
    logging.warning('%s step %d: resuming under a changed config (checkpoint.force_resume): %s',
                    where, step, shown)
    return changes
  raise ResumeRefused(
      f'{where} step {step} was trained with another config ({shown}). Start fresh with a '
      f'new --config.workdir, or continue this run under the new config with {_FORCE}.')


def axis_fields(abstract_params: nnx.State) -> Callable[[str, int | None], str | None]:
  """describe(checkpoint key, axis) for Checkpointer.resume, from params' logical axes."""
  flat, _ = jax.tree_util.tree_flatten_with_path(
      abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  axes = {jax.tree_util.keystr(p): tuple(v.get_metadata().get('logical_axes') or ())
          for p, v in flat if isinstance(v, nnx.Variable)}

  def describe(key: str, axis: int | None) -> str | None:
    name = key[:-len('.value')] if key.endswith('.value') else key
    for path, names in axes.items():
      if name.endswith(path):
        if axis is None or axis >= len(names) or names[axis] not in _AXIS_FIELD:
          return 'model.preset / model.overrides'
        return _AXIS_FIELD[names[axis]]
    return None
  return describe
