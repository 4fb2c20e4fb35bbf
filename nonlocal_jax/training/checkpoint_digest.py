"""What a checkpoint's ``meta`` records about its ``state`` so that a restore can verify what it read.

``digest``: sha256 over every leaf of the state dict (step, params, batch_stats, opt_state, rng) in the sorted order
of their paths, each leaf as its path, dtype, shape and raw bytes: one flipped bit anywhere changes it. ``layout``:
the same over paths, dtypes and shapes only, computable from the state a config builds before anything is read, so
that a checkpoint of another model is told apart from a damaged one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import flax
import jax
import numpy as np


def _leaves(state_dict: Any) -> Iterator[tuple[str, Any]]:
  # Empty nodes (batch_stats of a model without BN) are dropped, and orbax may return them as None.
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state_dict), sep='/')
  for name in sorted(flat):
    if flat[name] is not None:
      yield name, flat[name]


def _host(x: Any) -> np.ndarray:
  """The whole value of a leaf on this host: replicated arrays of a multi-host run are read from a local copy."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if not x.is_fully_addressable:
      if not x.is_fully_replicated:
        raise ValueError(f'Cannot digest an array sharded over processes (sharding {x.sharding}).')
      x = x.addressable_data(0)
  return np.ascontiguousarray(np.asarray(x))


def digest(state_dict: Any) -> str:
  """The sha256 (hex) of every leaf's path, dtype, shape and bytes, in sorted path order."""
  h = hashlib.sha256()
  for name, leaf in _leaves(state_dict):
    value = _host(leaf)
    h.update(f'{name}:{value.dtype}:{value.shape};'.encode())
    h.update(value.tobytes())
  return h.hexdigest()


def layout(state_dict: Any) -> str:
  """The sha256 (hex) of every leaf's path, dtype and shape: what the state is, not what it holds."""
  h = hashlib.sha256()
  for name, leaf in _leaves(state_dict):
    dtype = leaf.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
      dtype = jax.random.key_data(leaf).dtype
    h.update(f'{name}:{np.dtype(dtype)}:{tuple(np.shape(leaf))};'.encode())
  return h.hexdigest()
