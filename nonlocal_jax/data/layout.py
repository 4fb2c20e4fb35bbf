"""Where this process stands among the hosts of a run: its share of the batch and of a split.

Each process reads its own contiguous share of a split (``tfds.even_splits``) and batches
``global_batch_size / jax.process_count()`` examples; the global batch must split evenly over all devices.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

from nonlocal_jax.data import builders


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
  """Where this process stands among the hosts of a run, and how many devices it feeds."""
  index: int  # jax.process_index().
  count: int  # jax.process_count().
  local_devices: int  # jax.local_device_count().

  @classmethod
  def from_jax(cls, index=None, count=None, local_devices=None) -> 'ProcessLayout':
    """The layout of the current JAX run, with any field overridden (tests pretend to be other hosts)."""
    if index is None or count is None or local_devices is None:
      # Imported only here: with a layout given (benchmarks, tests), the input pipelines run without JAX.
      import jax  # pylint: disable=g-import-not-at-top
      index = jax.process_index() if index is None else index
      count = jax.process_count() if count is None else count
      local_devices = jax.local_device_count() if local_devices is None else local_devices
    return cls(int(index), int(count), int(local_devices))


def local_batch_size(global_batch_size: int, layout: ProcessLayout, field: str = 'global_batch_size') -> int:
  """The per-process batch; raises if the global batch does not split evenly over all devices."""
  devices = layout.count * layout.local_devices
  if global_batch_size < 1 or global_batch_size % devices:
    raise ValueError(f'config.data.{field}={global_batch_size} must be a positive multiple of the {devices} '
                     'devices of this run: change it to a multiple.')
  return global_batch_size // layout.count


def read_share(builder: tfds.core.DatasetBuilder, split: str, layout: ProcessLayout, *, shuffle: bool, seed: int,
               features: builders.DatasetFeatures) -> tuple[tf.data.Dataset, int, int]:
  """This process's share of ``split`` (videos left encoded), its size, and the largest share of any process."""
  splits = tfds.even_splits(split, n=layout.count) if layout.count > 1 else [split]
  own = splits[layout.index]
  decoders = {features.input_key: tfds.decode.SkipDecoding()} if features.kind == 'video' else None
  read_config = tfds.ReadConfig(shuffle_seed=seed + 1000003 * layout.index, try_autocache=False)
  ds = builder.as_dataset(split=own, shuffle_files=shuffle, decoders=decoders, read_config=read_config)
  try:
    sizes = [builder.info.splits[s].num_examples for s in splits]
  except (KeyError, ValueError):  # Split sizes unknown (mocked data): count what this process reads.
    sizes = [int(ds.cardinality())] * layout.count
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds, sizes[layout.index], max(sizes)
