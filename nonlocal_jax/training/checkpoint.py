"""Checkpoints with orbax: the training state every N steps (kept K, written asynchronously), restore, and
``init_checkpoint`` (parameters of another run loaded by name and shape).

A checkpoint ``<workdir>/checkpoints/<step>/`` holds ``state`` (step, params, batch_stats, opt_state, rng as
nested dicts) and ``meta`` (JSON: the step and the number of training batches consumed, i.e. the data position).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from nonlocal_jax import console
from nonlocal_jax import paths


def checkpoint_dir(workdir: str) -> str:
  """Where the checkpoints of a run in ``workdir`` live: absolute if local, unchanged if remote (gs://)."""
  return os.fspath(paths.absolute(workdir) / 'checkpoints')


def create_manager(workdir: str, *, keep: int = 3, asynchronous: bool = True) -> ocp.CheckpointManager:
  """An orbax CheckpointManager over ``<workdir>/checkpoints`` that keeps the last ``keep`` checkpoints."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, state: Any, *, batches_consumed: int) -> None:
  """Starts saving ``state`` (a flax struct) at its step; returns while the write goes on in the background."""
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
      meta=ocp.args.JsonSave({'step': step, 'batches_consumed': int(batches_consumed)})), force=True)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore(manager: ocp.CheckpointManager, target: Any, step: Optional[int] = None) -> tuple[Any, dict]:
  """Restores the checkpoint at ``step`` (None: the latest) into the structure and shardings of ``target``.

  Returns (state, meta); raises FileNotFoundError if there is no such checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f'No checkpoint at step {step} in {manager.directory}; available: '
                            f'{sorted(manager.all_steps())}.')
  target_dict = flax.serialization.to_state_dict(target)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(target_dict)), meta=ocp.args.JsonRestore()))
  return flax.serialization.from_state_dict(target, restored['state']), dict(restored['meta'])


def load_variables(path: str, step: Optional[int] = None) -> dict:
  """{'params': ..., 'batch_stats': ...} as NumPy from a run's workdir or checkpoints directory."""
  path = paths.absolute(paths.expand(path))
  nested = path / 'checkpoints'
  directory = nested if nested.is_dir() else path
  if not directory.is_dir():
    raise FileNotFoundError(f'config.train.init_checkpoint={path} is not a directory: give the workdir of a '
                            'finished run (or its checkpoints directory).')
  steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
  step = (steps[-1] if steps else None) if step is None else step
  if step is None:
    raise FileNotFoundError(f'config.train.init_checkpoint={path} holds no checkpoint: train that run first.')
  # Restored as NumPy, whatever devices and processes the other run used.
  checkpointer = ocp.PyTreeCheckpointer()
  item = directory / str(step) / 'state'
  metadata = checkpointer.metadata(item)
  tree = metadata.item_metadata.tree if hasattr(metadata, 'item_metadata') else metadata
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  restored = checkpointer.restore(item, restore_args=restore_args)
  return {k: jax.tree.map(np.asarray, restored.get(k) or {}) for k in ('params', 'batch_stats')}


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
