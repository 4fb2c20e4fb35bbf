"""The training input: an endless, deterministic stream of augmented clips (or images) for this process.

The stream of batches is a function of the seed and the process layout: augmentation seeds are stateless,
derived from each example's position in the stream, so parallel maps cannot reorder randomness; within an epoch,
every example of this process's share is read once.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from nonlocal_jax.data import builders
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import transforms

AUTOTUNE = tf.data.AUTOTUNE


def create_train_iterator(data_config, *, seed: int, split: Optional[str] = None,
                          layout: Optional[layout_lib.ProcessLayout] = None, start_batch: int = 0
                          ) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator of training batches of ``config.data`` (video clips or images), for this process.

  Clips: ``num_frames`` frames every ``frame_stride`` from a random window (short videos loop), shorter side
  scaled to a random size in [train_short_side_min, train_short_side_max], a random ``crop_size`` square, a
  random horizontal flip, then normalisation. Images: the same without the time axis. A batch holds ``clips``
  float32 (B, T, H, W, 3) (``image`` (B, H, W, 3) for images) and ``label`` int32 (B,) (multi-label datasets:
  float32 (B, num_classes) multi-hot, ``transforms.label``).

  ``start_batch`` resumes the stream: the iterator yields exactly what a fresh one yields after that many
  batches (the examples before it are read but not decoded), so a resumed run sees the same data.
  """
  c = data_config
  layout = layout or layout_lib.ProcessLayout.from_jax()
  batch = layout_lib.local_batch_size(c.global_batch_size, layout)
  split = split or c.train_split
  builder = builders.prepared_builder(c, [split])
  features = builders.dataset_features(builder)
  transforms.check_settings(c, features.kind)
  ds, _, _ = layout_lib.read_share(builder, split, layout, shuffle=True, seed=seed, features=features)
  decoded = bool(c.get('cache_decoded', False)) and features.kind == 'video'
  if decoded:
    # Small datasets only: every frame is decoded once and kept in memory, so later epochs decode nothing.
    key = features.input_key
    ds = ds.map(lambda ex: {**ex, key: transforms.decode_frames(ex[key])}, num_parallel_calls=AUTOTUNE,
                deterministic=True).cache()
  # Shuffle before repeat: epochs stay whole (each example once per epoch), and the order changes each epoch.
  ds = ds.shuffle(c.shuffle_buffer, seed=seed + 7 * layout.index, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate()
  if start_batch:
    # Skipping before the map keeps each example's stream index, hence its augmentation seed, unchanged.
    ds = ds.skip(int(start_batch) * batch)
  base_seed = tf.constant([seed, layout.index], tf.int64)

  def transform(index, example):
    example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    if features.kind == 'video':
      out = {'clips': transforms.train_clip(example[features.input_key], example_seed, c, decoded)}
    else:
      out = {'image': transforms.train_image(example[features.input_key], example_seed, c)}
    out['label'] = transforms.label(example[features.label_key], features)
    return out

  ds = ds.map(transform, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch, drop_remainder=True).prefetch(c.prefetch_batches)
  return _numpy_batches(ds)


def _numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  # A generator, so the tf.data iterator starts at the first next(), not when the stream is created.
  yield from tfds.as_numpy(ds)
