"""Checkpoints with orbax: the training state every N steps (kept K, written asynchronously), restore, and
``init_checkpoint`` (parameters of another run, or of an official model as ``zoo:NAME``, loaded by name and shape).

A checkpoint ``<workdir>/checkpoints/<step>/`` holds ``state`` (step, params, batch_stats, opt_state, rng as
nested dicts) and ``meta`` (JSON: the step, the number of training batches consumed, i.e. the data position, and
the ``digest`` and ``layout`` of the state, ``checkpoint_digest``). A restore checks the digest of what it read; a
checkpoint that cannot be read or does not match is moved to ``<workdir>/checkpoints_damaged/<step>-<reason>``
(never deleted) and the newest intact one is restored instead, with one console line. A write that fails (a full
disk) raises ``CheckpointError`` in one sentence; the checkpoints written before it stay.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from nonlocal_jax import console
from nonlocal_jax import paths
from nonlocal_jax import zoo
from nonlocal_jax.training import checkpoint_digest as digest_lib
from nonlocal_jax.training.errors import ConfigError


def checkpoint_dir(workdir: str) -> str:
  """Where the checkpoints of a run in ``workdir`` live: absolute if local, unchanged if remote (gs://)."""
  return os.fspath(paths.absolute(workdir) / 'checkpoints')


class CheckpointError(ConfigError):  # A ConfigError: main.py prints it as its one sentence, without a traceback.
  """A checkpoint cannot be written, or no intact one can be restored; the message says what to do."""


class _Damaged(Exception):
  """A checkpoint that cannot be read or does not match its digest: ``reason`` for people, ``tag`` for its name."""

  def __init__(self, reason: str, tag: str):
    super().__init__(reason)
    self.reason, self.tag = reason, tag


def _cause(e: BaseException) -> str:
  """The reason of a failed read or write in a few words (the full error goes to the log)."""
  seen = e
  while seen is not None:  # orbax and TensorStore wrap the OSError of the file system.
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror
    seen = seen.__cause__ or seen.__context__
  first = (str(e).strip().splitlines() or [type(e).__name__])[0]
  return first if len(first) <= 120 else first[:117] + '...'


def steps_on_disk(directory: Any) -> list[int]:
  """The checkpoint steps present in the checkpoints directory ``directory`` (none if it does not exist)."""
  directory = paths.as_path(directory)
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


class Manager(ocp.CheckpointManager):
  """An orbax CheckpointManager whose failed writes (in ``save`` or in the background) raise CheckpointError."""

  def _failed(self, e: Exception) -> CheckpointError:
    logging.warning('Writing a checkpoint to %s failed.', self.directory, exc_info=True)
    written = steps_on_disk(self.directory)
    kept = (f'a rerun resumes from step {written[-1]}, the last checkpoint written' if written else
            'no checkpoint had been written yet')
    return CheckpointError(f'Writing a checkpoint to {self.directory} failed ({_cause(e)}): free space there or pass '
                           f'another --workdir, then rerun; {kept}.')

  def save(self, *args, **kwargs) -> bool:
    """orbax's save; a failed write, this one's or the previous one's, raises CheckpointError."""
    try:
      return super().save(*args, **kwargs)
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise self._failed(e) from e

  def wait_until_finished(self) -> None:
    """orbax's wait; a failed background write raises CheckpointError."""
    try:
      super().wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._failed(e) from e


def write_each_array_from_one_replica() -> None:
  """Makes orbax write a replicated ``jax.Array`` from one replica, not sliced over all of them.

  orbax saves replica-parallel by default (except where ``JAX_PLATFORMS`` names a GPU): an array replicated over D
  devices is cut into D slices, and the first save compiles one slice program per shape and device. On 4 CPU
  devices the first save of R50 C2D + 5 NL's state held the training loop 8.2 s instead of 0.5 s, and later saves
  1.1 s instead of 0.4 s (``bench/results/checkpoint_save.md``). The state is small: one replica writes it quickly.
  ``StandardCheckpointHandler`` takes no handler registry of its own, so this sets orbax's global one.
  """
  ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
                                          override=True)


def create_manager(workdir: str, *, keep: int = 3, asynchronous: bool = True) -> Manager:
  """A ``Manager`` over ``<workdir>/checkpoints`` that keeps the last ``keep`` checkpoints, each array written from
  one replica (``write_each_array_from_one_replica``)."""
  write_each_array_from_one_replica()
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous, create=True)
  return Manager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, state: Any, *, batches_consumed: int) -> None:
  """Starts saving ``state`` (a flax struct) at its step; returns while the write goes on in the background.

  The digest of the state is computed here, before the write starts, and saved in the checkpoint's ``meta``.
  """
  step = int(jax.device_get(state.step))
  state_dict = flax.serialization.to_state_dict(state)
  meta = {'step': step, 'batches_consumed': int(batches_consumed), 'digest': digest_lib.digest(state_dict),
          'layout': digest_lib.layout(state_dict)}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(meta)),
               force=True)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _read_verified(manager: ocp.CheckpointManager, step: int, target_dict: Any) -> tuple[Any, dict]:
  """(state dict, meta) of ``step``; raises _Damaged, or CheckpointError when it holds another kind of state."""
  try:
    meta = dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Reading the meta of checkpoint %d failed.', step, exc_info=True)
    raise _Damaged(f'its meta cannot be read ({_cause(e)})', 'no-meta') from e
  args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target_dict)))
  if 'digest' not in meta:  # Written before checkpoints had digests: restored as before, unverified.
    return manager.restore(step, args=args)['state'], meta
  if meta.get('layout') != digest_lib.layout(target_dict):
    raise CheckpointError(f'The checkpoint of step {step} in {manager.directory} holds another model or optimiser '
                          'than this config builds: use the config of that run (its config.json) or another '
                          '--workdir.')
  try:
    state_dict = manager.restore(step, args=args)['state']
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Reading the state of checkpoint %d failed.', step, exc_info=True)
    raise _Damaged(f'its arrays cannot be read ({_cause(e)})', 'unreadable') from e
  if digest_lib.digest(state_dict) != meta['digest']:
    raise _Damaged('its arrays differ from the digest written with them', 'digest-mismatch')
  return state_dict, meta


def damaged_dir(directory: Any) -> Any:
  """Where the damaged checkpoints of the checkpoints directory ``directory`` are moved: ``checkpoints_damaged``."""
  directory = paths.as_path(directory)
  return directory.parent / f'{directory.name}_damaged'


def _move_aside(manager: ocp.CheckpointManager, step: int, tag: str) -> Any:
  """Moves the step directory into ``damaged_dir`` (never deletes it), so that rotation no longer counts it."""
  aside = damaged_dir(manager.directory)
  target = aside / f'{step}-{tag}'
  copies = 1
  while target.exists():  # The same step damaged again after a rerun: both are kept.
    copies += 1
    target = aside / f'{step}-{tag}-{copies}'
  if jax.process_index() == 0:
    aside.mkdir(parents=True, exist_ok=True)
    (paths.as_path(manager.directory) / str(step)).rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'checkpoint_{step}_moved_aside')
  manager.reload()
  return target


def restore(manager: ocp.CheckpointManager, target: Any, step: Optional[int] = None) -> tuple[Any, dict]:
  """Restores the checkpoint at ``step`` (None: the newest intact one) into the structure and shardings of ``target``.

  What is read is checked against the digest saved with it. With ``step`` None, a damaged checkpoint is moved aside
  (``damaged_dir``) with one console line and the next newest is tried. Returns (state, meta); raises
  FileNotFoundError if there is no such checkpoint, CheckpointError if it (or, with None, every one) is damaged or
  holds another model. The meta returned holds the step and the data position (the digest was checked).
  """
  available = sorted(manager.all_steps())
  latest = available[-1] if available else None
  if (latest if step is None else step) is None or (step is not None and step not in available):
    raise FileNotFoundError(f'No checkpoint at step {latest if step is None else step} in {manager.directory}; '
                            f'available: {available}.')
  target_dict = flax.serialization.to_state_dict(target)
  for candidate in reversed(available) if step is None else [step]:
    try:
      state_dict, meta = _read_verified(manager, candidate, target_dict)
    except _Damaged as e:
      moved = _move_aside(manager, candidate, e.tag)
      console.info('Skipped the checkpoint of step %d: %s; it was moved to %s.', candidate, e.reason, moved)
      if step is not None:
        raise CheckpointError(f'The checkpoint of step {step} is damaged ({e.reason}) and was moved to {moved}: '
                              f'choose another step ({sorted(manager.all_steps())}).') from e
      continue
    checked = {k: v for k, v in meta.items() if k not in ('digest', 'layout')}  # The meta of the callers, as before.
    return flax.serialization.from_state_dict(target, state_dict), checked
  raise CheckpointError(no_intact_checkpoint(manager.directory))


def no_intact_checkpoint(directory: Any) -> str:
  """The sentence for a run whose every checkpoint was found damaged (and moved to ``damaged_dir``)."""
  return (f'No checkpoint in {directory} is intact (the damaged ones are in {damaged_dir(directory)}): to train '
          f'from scratch, delete {damaged_dir(directory)} and rerun, or pass another --workdir.')


def _load_verified(item: Any) -> dict:
  """The state dict of the checkpoint directory ``item`` as NumPy, checked against its digest; raises _Damaged."""
  try:
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(item / 'meta')
  except Exception as e:  # pylint: disable=broad-except
    raise _Damaged(f'its meta cannot be read ({_cause(e)})', 'no-meta') from e
  try:
    # Restored as NumPy, whatever devices and processes the other run used.
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(item / 'state')
    tree = metadata.item_metadata.tree if hasattr(metadata, 'item_metadata') else metadata
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(item / 'state', restore_args=restore_args)
  except Exception as e:  # pylint: disable=broad-except
    raise _Damaged(f'its arrays cannot be read ({_cause(e)})', 'unreadable') from e
  if 'digest' in meta and digest_lib.digest(restored) != meta['digest']:
    raise _Damaged('its arrays differ from the digest written with them', 'digest-mismatch')
  return restored


def load_variables(path: str, step: Optional[int] = None) -> dict:
  """{'params': ..., 'batch_stats': ...} as NumPy from a run's workdir or checkpoints directory, or ``zoo:NAME``.

  The newest intact checkpoint when ``step`` is None (damaged ones are skipped with a console line, left in
  place: the run may be someone else's); raises CheckpointError if the one asked for, or every one, is damaged.
  ``zoo:NAME``: the official model's converted weights (``nonlocal_jax.zoo.load_pretrained``, its cache and
  downloads); a ConfigError says what went wrong.
  """
  try:
    name = zoo.parse_reference(path)
    if name is not None:
      return zoo.load_pretrained(name)
  except zoo.ZooError as e:
    raise ConfigError(str(e)) from None
  path = paths.absolute(paths.expand(path))
  nested = path / 'checkpoints'
  directory = nested if nested.is_dir() else path
  if not directory.is_dir():
    raise FileNotFoundError(f'config.train.init_checkpoint={path} is not a directory: give the workdir of a '
                            'finished run (or its checkpoints directory).')
  steps = steps_on_disk(directory)
  if not steps and step is None:
    raise FileNotFoundError(f'config.train.init_checkpoint={path} holds no checkpoint: train that run first.')
  for candidate in reversed(steps) if step is None else [step]:
    try:
      restored = _load_verified(directory / str(candidate))
    except _Damaged as e:
      if step is not None:
        raise CheckpointError(f'The checkpoint of step {step} in {directory} is damaged ({e.reason}): choose '
                              f'another step ({[s for s in steps if s != step]}).') from e
      console.info('Skipped the checkpoint of step %d in %s: %s.', candidate, directory, e.reason)
      continue
    return {k: jax.tree.map(np.asarray, restored.get(k) or {}) for k in ('params', 'batch_stats')}
  raise CheckpointError(f'No checkpoint in {directory} is intact: use the workdir of another run.')


def merge_matching(current: Any, loaded: Any) -> tuple[Any, dict]:
  """Takes from ``loaded`` every leaf of ``current`` with the same path and shape; returns (tree, report).

  The report lists 'loaded', 'new' (not in the checkpoint: e.g. added non-local blocks, which keep their
  identity initialisation), 'mismatched' (same name, other shape: e.g. a classifier for other classes) and
  'unused' (in the checkpoint only).
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(current), sep='/')
  other = flax.traverse_util.flatten_dict(flax.core.unfreeze(loaded), sep='/') if loaded else {}
  report = {'loaded': [], 'new': [], 'mismatched': [], 'unused': sorted(set(other) - set(flat))}
  out = {}
  for name, value in flat.items():
    if name not in other:
      report['new'].append(name)
      out[name] = value
    elif tuple(np.shape(other[name])) != tuple(np.shape(value)):
      report['mismatched'].append(name)
      out[name] = value
    else:
      report['loaded'].append(name)
      out[name] = np.asarray(other[name]).astype(np.asarray(value).dtype)
  return flax.traverse_util.unflatten_dict(out, sep='/'), report


def log_report(report: dict, what: str) -> None:
  """Says what ``merge_matching`` loaded and what stayed new (the names of each group go to the log only)."""
  console.info('init_checkpoint %s: %d loaded, %d new, %d with another shape, %d unused.', what,
               len(report['loaded']), len(report['new']), len(report['mismatched']), len(report['unused']))
  for key in ('new', 'mismatched', 'unused'):
    if report[key]:
      logging.info('init_checkpoint %s %s: %s', what, key, ', '.join(report[key]))
