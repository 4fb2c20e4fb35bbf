"""Fake data for measuring training throughput: random clips (or images) and labels generated on the devices.

``config.data.name='fake'`` replaces the input pipeline (as flax's ImageNet example does), so the clips/s that the
training loop logs are the network's alone. The batch of step index s (counting from 0, like the pipeline's
``start_batch``) is a jitted function of (seed, s) that writes the global batch straight into the batch sharding
it is given: no dataset is read, nothing is decoded or copied from the host, and a resumed run sees exactly the
batches an uninterrupted one sees. Inputs are standard-normal float32 (the scale of normalised pixels), labels
uniform over the classes; with the default partitionable threefry generator, the values do not depend on how the
batch is split over devices.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp

NAME = 'fake'


def is_fake(data_config) -> bool:
  """Whether ``config.data`` asks for fake data (``name='fake'``)."""
  return data_config.name == NAME


def example_shape(data_config, kind: str) -> tuple[int, ...]:
  """One example's input shape: (T, H, W, 3) for ``kind`` 'video', (H, W, 3) for 'image' (crop_size square)."""
  d = data_config
  frame = (d.crop_size, d.crop_size, 3)
  return (d.num_frames,) + frame if kind == 'video' else frame


def batch_fn(data_config, *, kind: str, num_classes: int, sharding) -> Callable[[int, int], dict]:
  """A jitted ``(seed, index) -> {'clips' or 'image': float32 (B, ...), 'label': int32 (B,)}``, B the global batch.

  The outputs are placed with ``sharding`` (the mesh's batch sharding) as they are generated. Every process must
  call it with the same arguments, as it calls the train step.
  """
  batch = data_config.global_batch_size
  shape = (batch,) + example_shape(data_config, kind)
  input_key = 'clips' if kind == 'video' else 'image'

  def make(seed, index):
    inputs_rng, label_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), index))
    return {input_key: jax.random.normal(inputs_rng, shape, jnp.float32),
            'label': jax.random.randint(label_rng, (batch,), 0, num_classes, jnp.int32)}
  return jax.jit(make, out_shardings=sharding)


def train_iterator(data_config, *, seed: int, kind: str, num_classes: int, sharding,
                   start_batch: int = 0) -> Iterator[dict]:
  """The endless stream of fake global batches from index ``start_batch`` on, already on the devices."""
  make = batch_fn(data_config, kind=kind, num_classes=num_classes, sharding=sharding)
  for index in itertools.count(start_batch):
    yield make(seed, index)


__all__ = ['NAME', 'batch_fn', 'example_shape', 'is_fake', 'train_iterator']
