"""Orbax checkpointing of the whole run: train state, data iterator, schedule position.

Two managers under one directory:
  <dir>/latest  the last `keep` checkpoints, written every `every` steps and at the end
  <dir>/best    the single checkpoint with the highest training reward (the paper
                keeps the checkpoint with the highest training reward)
Writes are asynchronous; `wait()` blocks until they are on disk. Saving and
restoring are collective: every JAX process calls them with its shards.

The train state is stored as a flat {path: array} dict, so a restore can check
every key and shape against the state the run expects and say precisely what
does not match, instead of failing deep inside a tree utility.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def _flatten(tree) -> dict[str, Any]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def _unflatten_like(template, flat: dict[str, Any]):
  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  return jax.tree_util.tree_unflatten(
      treedef, [flat[jax.tree_util.keystr(p)] for p, _ in paths_leaves])


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


def _barrier_prefix(name: str):
  # Both managers save the same step; without distinct barrier keys their async
  # commits collide across processes ("Barrier ... is already ongoing") and hang.
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  directory: str
  every: int = 100
  keep: int = 3
  keep_best: bool = True
  async_save: bool = True


class Checkpointer:
  """Saves and restores {state, data iterator state, run metadata} by step."""

  def __init__(self, cfg: CheckpointConfig):
    self.cfg = cfg
    root = pathlib.Path(cfg.directory).expanduser().resolve()
    self.root = root
    item_names = ('state', 'data', 'meta')
    self._latest = ocp.CheckpointManager(
        root / 'latest', item_names=item_names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save, create=True,
            multiprocessing_options=_barrier_prefix('latest')))
    self._best = None
    if cfg.keep_best:
      self._best = ocp.CheckpointManager(
          root / 'best', item_names=item_names,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1, best_fn=lambda m: m['train_reward'], best_mode='max',
              enable_async_checkpointing=cfg.async_save, create=True,
              multiprocessing_options=_barrier_prefix('best')))

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def should_save(self, step: int, is_last: bool) -> bool:
    return is_last or (self.cfg.every > 0 and step % self.cfg.every == 0)

  def save(self, step: int, state, data_state: dict, meta: dict,
           train_reward: float | None = None) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(_flatten(state)),
                              data=ocp.args.JsonSave(data_state),
                              meta=ocp.args.JsonSave(meta))
    self._latest.save(step, args=args, force=True)
    if self._best is not None and train_reward is not None:
      self._best.save(step, args=args, metrics={'train_reward': float(train_reward)},
                      force=True)

  def restore(self, template_state, step: int | None = None, best: bool = False):
    """Returns (state, data_state, meta) of `step` (default: the latest / the best).

    template_state: a state of the expected structure, shapes and shardings (e.g.
    the freshly initialised one); the restored arrays take its shardings.
    """
    manager = self._best if best else self._latest
    if manager is None:
      raise ValueError(f'{self.root}: best-checkpoint tracking is off (keep_best=False)')
    step = manager.best_step() if best else (step if step is not None else manager.latest_step())
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {manager.directory}')
    expected = _abstract(_flatten(template_state))
    stored = manager.item_metadata(step)['state']
    self._check_compatible(manager.directory / str(step), expected, stored)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(expected), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return _unflatten_like(template_state, restored['state']), restored['data'], restored['meta']

  @staticmethod
  def _check_compatible(path, expected: dict, stored) -> None:
    if stored is None:
      return
    stored = dict(stored)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    problems = []
    if missing:
      problems.append(f'missing keys {missing[:5]}{"..." if len(missing) > 5 else ""}')
    if unexpected:
      problems.append(f'unexpected keys {unexpected[:5]}{"..." if len(unexpected) > 5 else ""}')
    for key in sorted(set(expected) & set(stored)):
      want, got = tuple(expected[key].shape), tuple(getattr(stored[key], 'shape', ()) or ())
      if hasattr(stored[key], 'shape') and want != got:
        problems.append(f'{key}: checkpoint shape {got}, run expects {want}')
    if problems:
      raise ValueError(f'checkpoint {path} does not match this run\'s model/optimizer: '
                       + '; '.join(problems[:8]))

  def wait(self) -> None:
    self._latest.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    if self._best is not None:
      self._best.close()

