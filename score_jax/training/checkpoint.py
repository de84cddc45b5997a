"""Orbax checkpointing of the whole run: train state, data iterator, schedule position.

Two managers under one directory:
  <dir>/latest   the last `keep` checkpoints, written every `every` steps and at the end
  <dir>/best     the single checkpoint with the highest training reward (the paper
                 keeps the checkpoint with the highest training reward)
  <dir>/damaged  steps found unreadable on resume, moved here (never deleted)
Writes are asynchronous; `wait()` blocks until they are on disk. Saving and
restoring are collective: every JAX process calls them with its shards.

The train state is stored as a flat {path: array} dict, so a resume can check
every key and shape against the state the run expects (from the stored metadata
alone, before any work) and say precisely what does not match, instead of
failing deep inside a tree utility.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from score_jax.errors import UserError


class ResumeRefused(UserError):
  """The checkpoint in the workdir cannot be continued by this run's config."""


# Words of the storage errors (tensorstore, the file system, JSON) that mark a
# step as damaged; anything else is a bug and is raised, not set aside.
_DAMAGE = re.compile(r'OUT_OF_RANGE|NOT_FOUND|DATA_LOSS|not found|does not exist|No such file'
                     r'|Error reading|Error opening|[Cc]orrupt|[Tt]runcat|Expecting value')
_ITEM_FILES = ('meta/metadata', 'data/metadata', 'state/_METADATA', 'state/manifest.ocdbt')


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


def _handlers():
  # Registered up front so a fresh process can read a step's metadata (shapes)
  # without restoring it; unregistered items read back as None.
  return {'state': ocp.StandardCheckpointHandler(), 'data': ocp.JsonCheckpointHandler(),
          'meta': ocp.JsonCheckpointHandler()}


def _error_text(e: BaseException) -> str:
  parts = []
  while e is not None and len(parts) < 5:
    parts.append(f'{type(e).__name__}: {e}')
    e = e.__cause__ or e.__context__
  return ' <- '.join(parts)


def _damaged_file(step_dir: pathlib.Path, text: str) -> str:
  """The file a storage error points at, relative to the step directory."""
  for name in _ITEM_FILES:
    if not (step_dir / name).exists():
      return f'{name} missing'
  size = re.search(r'value of size (\d+)', text)
  if size:   # tensorstore names the array, not the file; its size finds the file
    hits = [p for p in step_dir.rglob('*') if p.is_file() and p.stat().st_size == int(size[1])]
    if len(hits) == 1:
      return f'{hits[0].relative_to(step_dir)} truncated to {size[1]} bytes'
  found = re.search(r'local file "([^"]+)"', text)
  return found[1] if found else str(step_dir)


def _one_line(text: str, limit: int = 160) -> str:
  last = re.split(r' <- ', text)[-1].splitlines()[0]
  return last if len(last) <= limit else last[:limit] + '...'


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
        root / 'latest', item_names=item_names, item_handlers=_handlers(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save, create=True,
            multiprocessing_options=_barrier_prefix('latest')))
    self._best = None
    if cfg.keep_best:
      self._best = ocp.CheckpointManager(
          root / 'best', item_names=item_names, item_handlers=_handlers(),
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
    # A run resumed from before its newest save (a hard kill, a damaged step)
    # retrains steps `best` may already hold; the retrained step is the same one.
    if (self._best is not None and train_reward is not None
        and step not in self._best.all_steps()):
      self._best.save(step, args=args, metrics={'train_reward': float(train_reward)},
                      force=True)

  def resume(self, template_state, check_meta: Callable[[int, dict], None], *,
             describe: Callable[[str, int | None], str | None] | None = None,
             restore: bool = True):
    """The newest intact step as (step, state, data_state, meta); None if there is none.

    Checks run on the stored metadata before any array is read: every key and
    shape against `template_state` (arrays or ShapeDtypeStructs; the restored
    arrays take its shardings), then `check_meta(step, meta)`; both raise
    ResumeRefused. A step whose files cannot be read is moved to <dir>/damaged
    with a one-line warning, and the next older one is tried. restore=False
    stops after the checks (state and data_state are None): a cheap preflight.
    describe(key, axis) names the config field behind a mismatched array axis.
    """
    expected = _abstract(_flatten(template_state))
    while (step := self._latest.latest_step()) is not None:
      step_dir = pathlib.Path(self._latest.directory) / str(step)
      try:
        meta, stored = self._read_metadata(self._latest, step)
      except Exception as e:  # pylint: disable=broad-except
        if not self._set_aside(step_dir, step, e):
          raise
        continue
      _check_compatible(step_dir, expected, stored, describe)
      check_meta(step, meta)
      if not restore:
        return step, None, None, meta
      try:
        restored = self._restore(self._latest, step, expected)
      except Exception as e:  # pylint: disable=broad-except
        if not self._set_aside(step_dir, step, e):
          raise
        continue
      return (step, _unflatten_like(template_state, restored['state']), restored['data'],
              restored['meta'])
    return None

  def restore(self, template_state, step: int | None = None, best: bool = False):
    """Returns (state, data_state, meta) of `step` (default: the latest / the best).

    template_state: a state of the expected structure, shapes and shardings (e.g.
    the freshly initialised one); the restored arrays take its shardings.
    """
    manager, step = self._pick(step, best)
    expected = _abstract(_flatten(template_state))
    _, stored = self._read_metadata(manager, step)
    _check_compatible(pathlib.Path(manager.directory) / str(step), expected, stored)
    restored = self._restore(manager, step, expected)
    return _unflatten_like(template_state, restored['state']), restored['data'], restored['meta']

  def restore_params(self, template_params, step: int | None = None, best: bool = False):
    """(params, meta) of a step: only the state's `params`, no optimizer state.

    Evaluation needs no optimizer: the step's other arrays (moments, step, rng)
    are never read (an Orbax partial restore). template_params: arrays or
    ShapeDtypeStructs with shardings, which the restored arrays take; with LoRA,
    the adapters (what the run trained).
    """
    manager, step = self._pick(step, best)
    expected = {'.params' + k: v for k, v in _abstract(_flatten(template_params)).items()}
    meta, stored = self._read_metadata(manager, step)
    stored = {k: v for k, v in stored.items() if k.startswith('.params')}
    step_dir = pathlib.Path(manager.directory) / str(step)
    _check_compatible(step_dir, expected, stored)
    # The managers' 'state' handler restores whole trees only; a PyTree reader of
    # the same files restores a part of one.
    with ocp.PyTreeCheckpointer() as reader:
      restored = reader.restore(step_dir / 'state', args=ocp.args.PyTreeRestore(
          item=expected, restore_args=ocp.checkpoint_utils.construct_restore_args(expected),
          partial_restore=True))
    params = _unflatten_like(template_params,
                             {k[len('.params'):]: v for k, v in restored.items()})
    return params, meta

  def _pick(self, step: int | None, best: bool):
    """(manager, step): the best step, or `step` (default: the latest)."""
    manager = self._best if best else self._latest
    if manager is None:
      raise ValueError(f'{self.root}: best-checkpoint tracking is off (keep_best=False)')
    step = manager.best_step() if best else (step if step is not None else manager.latest_step())
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {manager.directory}')
    return manager, step

  @staticmethod
  def _read_metadata(manager, step: int) -> tuple[dict, dict]:
    """(meta, {key: stored array metadata}) of a step, without reading any array."""
    step_md = manager.metadata(step)
    items = getattr(step_md, 'item_metadata', None) or manager.item_metadata(step)
    stored = items['state'] if items is not None else None
    if stored is None:
      raise FileNotFoundError('state/_METADATA not found')
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    return meta, dict(stored)

  @staticmethod
  def _restore(manager, step: int, expected: dict):
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(expected), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))

  def _set_aside(self, step_dir: pathlib.Path, step: int, error: Exception) -> bool:
    """Moves a damaged step to <dir>/damaged and warns; False if `error` is no damage."""
    text = _error_text(error)
    if not _DAMAGE.search(text):
      return False
    what = _damaged_file(step_dir, text)
    dest = self.root / 'damaged' / str(step)
    n = 1
    while dest.exists():
      dest, n = self.root / 'damaged' / f'{step}.{n}', n + 1
    if jax.process_index() == 0:
      dest.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(step_dir), str(dest))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set_aside_{step}')
    self._latest.reload()
    after = self._latest.latest_step()
    logging.warning('checkpoint step %d is damaged (%s: %s); moved it to %s; %s', step, what,
                    _one_line(text), dest,
                    f'falling back to step {after}' if after is not None
                    else 'no older step is left, so the run starts from step 0')
    return True

  def wait(self) -> None:
    self._latest.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    if self._best is not None:
      self._best.close()


def _short(key: str) -> str:
  return key[:-len('.value')] if key.endswith('.value') else key


def _check_compatible(step_dir: pathlib.Path, expected: dict, stored: dict,
                      describe: Callable[[str, int | None], str | None] | None = None) -> None:
  """Raises ResumeRefused naming the first differing array, both shapes and the field."""
  missing = sorted(set(expected) - set(stored))
  unexpected = sorted(set(stored) - set(expected))
  shapes = [(k, tuple(getattr(stored[k], 'shape', ()) or ()), tuple(expected[k].shape))
            for k in sorted(set(expected) & set(stored)) if hasattr(stored[k], 'shape')]
  # The parameters first: the optimizer's moments only mirror them.
  differ = sorted([s for s in shapes if s[1] != s[2]],
                  key=lambda s: not s[0].startswith('.params'))
  parts = []
  if differ:
    key, got, want = differ[0]
    axis = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    field = describe(key, axis) if describe else None
    parts.append(f'{_short(key)} is {got} there but {want} here'
                 + (f' (config field {field})' if field else ''))
    if len(differ) > 1:
      parts.append(f'{len(differ) - 1} more arrays differ in shape')
  if missing:
    parts.append(f'{len(missing)} arrays of this run are not there, e.g. {_short(missing[0])}')
  if unexpected:
    parts.append(f'{len(unexpected)} arrays there are not in this run, e.g. '
                 f'{_short(unexpected[0])}')
  if parts:
    raise ResumeRefused(
        f"checkpoint {step_dir} does not fit this run's model/optimizer: "
        + '; '.join(parts) + '. Start fresh with a new --config.workdir, or set the config '
        "back to the checkpoint's.")
