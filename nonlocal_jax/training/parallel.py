"""Data parallelism over a 1-D device mesh: the mesh, batch sharding, and per-device steps via ``jax.shard_map``.

A step function written for one device (with ``lax.pmean(..., 'batch')`` where devices must agree) is mapped over
all devices of all processes with ``map_over_devices``: the pmap style of data parallelism, in its current form.
Each process feeds its local share of a global batch (``shard_batch``); the replicated state lives on every device.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'batch'

try:  # jax >= 0.6 exposes shard_map at the top level; older releases keep it in experimental.
  _shard_map = jax.shard_map
  _CHECK_KWARG = 'check_vma'
except AttributeError:  # pragma: no cover
  from jax.experimental.shard_map import shard_map as _shard_map  # pylint: disable=g-import-not-at-top
  _CHECK_KWARG = 'check_rep'


def initialize_distributed(multihost_config: Any) -> bool:
  """Calls ``jax.distributed.initialize`` if ``config.multihost.enabled``; returns whether it did.

  Must run before anything touches a JAX backend. Fields left None are detected by JAX (TPU pods, SLURM).
  """
  if multihost_config is None or not multihost_config.get('enabled', False):
    return False
  kwargs = {k: multihost_config.get(k) for k in ('coordinator_address', 'num_processes', 'process_id')
            if multihost_config.get(k) is not None}
  jax.distributed.initialize(**kwargs)
  return True


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh over all devices of all processes (or ``devices``), with the axis named ``'batch'``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of values every device holds in full (parameters, optimiser state)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The sharding of batches: the leading axis split over the devices."""
  return NamedSharding(mesh, P(AXIS))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Turns this process's NumPy batch (leading axis: its examples) into global arrays split over the mesh."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def local_rows(x: jax.Array) -> np.ndarray:
  """The rows of a batch-sharded global array that this process fed, in its original order, as NumPy."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards], axis=0)


def map_over_devices(fn: Callable, mesh: Mesh, in_specs, out_specs, **jit_kwargs) -> Callable:
  """``jax.jit(shard_map(fn))``: ``fn`` sees one device's share and may use collectives over ``'batch'``.

  Replication is not checked (``check_vma=False``): gradients are then per device, as under pmap, and the
  step averages them explicitly with ``lax.pmean``, which is what makes replicated outputs agree.
  """
  mapped = _shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **{_CHECK_KWARG: False})
  return jax.jit(mapped, **jit_kwargs)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places host values, identical on every process, on every device of the mesh."""
  sharding = replicated(mesh)
  return jax.jit(lambda t: t, out_shardings=sharding)(tree)


__all__ = ['AXIS', 'batch_sharded', 'initialize_distributed', 'local_rows', 'make_mesh', 'map_over_devices',
           'replicate', 'replicated', 'shard_batch', 'P']
