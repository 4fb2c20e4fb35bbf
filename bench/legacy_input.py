"""The input pipeline as it was before the random-access rewrite (tf.data over TFRecord, whole frames decoded and
scaled before cropping, float32 output): kept here only so that bench/input_pipeline.py measures the new pipeline
against it in the same run. Not part of the package; nothing else imports it.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from nonlocal_jax.data import builders
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import normalization
from nonlocal_jax.data import sampling

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 16  # Examples in the old shuffle buffer for the benchmark's small set.




def _tf_train_clip_indices(num_frames: tf.Tensor, clip_length: int, stride: int, seed: tf.Tensor) -> tf.Tensor:
  """TensorFlow twin of sampling.train_clip_indices with a stateless seed."""
  num_frames = tf.cast(num_frames, tf.int32)
  last_start = tf.maximum(num_frames - sampling.clip_window(clip_length, stride), 0)
  start = tf.random.stateless_uniform([], seed, minval=0, maxval=last_start + 1, dtype=tf.int32)
  return (start + stride * tf.range(clip_length)) % num_frames


def _tf_test_clip_indices(num_frames: tf.Tensor, clip_length: int, stride: int, num_clips: int) -> tf.Tensor:
  """TensorFlow twin of sampling.test_clip_indices."""
  num_frames = tf.cast(num_frames, tf.int32)
  starts = (num_frames * tf.range(num_clips)) // num_clips
  return (starts[:, None] + stride * tf.range(clip_length)[None, :]) % num_frames


def _tf_scaled_size(height: tf.Tensor, width: tf.Tensor, short_side: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """TensorFlow twin of sampling.scaled_size (round half to even, like Python's ``round``)."""
  h = tf.cast(height, tf.float64)
  w = tf.cast(width, tf.float64)
  s = tf.cast(short_side, tf.float64)
  new_h = tf.where(h <= w, s, tf.math.round(h * s / w))
  new_w = tf.where(h <= w, tf.math.round(w * s / h), s)
  return tf.cast(tf.maximum(new_h, 1.0), tf.int32), tf.cast(tf.maximum(new_w, 1.0), tf.int32)


def _tf_crop_offsets(height: tf.Tensor, width: tf.Tensor, crop_size: int, num_crops: int) -> tf.Tensor:
  """TensorFlow twin of sampling.crop_offsets, shape (num_crops, 2); the caller guarantees the crop fits."""
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  long_is_height = height > width
  long_len = tf.maximum(height, width)
  short_len = tf.minimum(height, width)
  if num_crops == 1:
    along = tf.reshape((long_len - crop_size) // 2, [1])
  else:
    along = ((long_len - crop_size) * tf.range(num_crops)) // (num_crops - 1)
  across = tf.fill([num_crops], (short_len - crop_size) // 2)
  ys = tf.where(long_is_height, along, across)
  xs = tf.where(long_is_height, across, along)
  return tf.stack([ys, xs], axis=1)


def _tf_random_crop_offset(height: tf.Tensor, width: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
  """A uniform random top-left corner (y, x) for a ``crop_size`` square inside a (height, width) frame."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  y = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=tf.cast(height, tf.int32) - crop_size + 1,
                                  dtype=tf.int32)
  x = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=tf.cast(width, tf.int32) - crop_size + 1,
                                  dtype=tf.int32)
  return tf.stack([y, x])


def _read_share(builder, split, layout, *, shuffle, seed, features):
  splits = tfds.even_splits(split, n=layout.count) if layout.count > 1 else [split]
  own = splits[layout.index]
  decoders = {features.input_key: tfds.decode.SkipDecoding()} if features.kind == 'video' else None
  read_config = tfds.ReadConfig(shuffle_seed=seed + 1000003 * layout.index, try_autocache=False)
  ds = builder.as_dataset(split=own, shuffle_files=shuffle, decoders=decoders, read_config=read_config)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def _normalize(x, c):
  x = tf.cast(x, tf.float32)
  mean, std = normalization.mean_and_std(c)
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _decode_frames(encoded):
  return tf.map_fn(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False), encoded,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _resize_short(frames, short_side):
  shape = tf.shape(frames)
  new_h, new_w = _tf_scaled_size(shape[-3], shape[-2], short_side)
  return tf.image.resize(frames, tf.stack([new_h, new_w]), method='bilinear')


def _train_clip(video, seed, c):
  seeds = tf.random.experimental.stateless_split(seed, 4)
  indices = _tf_train_clip_indices(tf.shape(video)[0], c.num_frames, c.frame_stride, seeds[0])
  frames = _resize_short(_decode_frames(tf.gather(video, indices)),
                         tf.random.stateless_uniform([], seeds[1], minval=c.train_short_side_min,
                                                     maxval=c.train_short_side_max + 1, dtype=tf.int32))
  shape = tf.shape(frames)
  offset = _tf_random_crop_offset(shape[-3], shape[-2], c.crop_size, seeds[2])
  frames = frames[..., offset[0]:offset[0] + c.crop_size, offset[1]:offset[1] + c.crop_size, :]
  flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
  frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[-2]), lambda: frames)
  return tf.ensure_shape(_normalize(frames, c), [c.num_frames, c.crop_size, c.crop_size, 3])


def train_iterator(c, *, seed, layout, start_batch=0):
  """The old training stream of ``config.data`` ``c`` (videos): float32 normalised clips."""
  batch = layout_lib.local_batch_size(c.global_batch_size, layout)
  builder = builders.prepared_builder(c, [c.train_split])
  features = builders.dataset_features(builder)
  ds = _read_share(builder, c.train_split, layout, shuffle=True, seed=seed, features=features)
  ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed + 7 * layout.index, reshuffle_each_iteration=True).repeat().enumerate()
  if start_batch:
    ds = ds.skip(int(start_batch) * batch)
  base_seed = tf.constant([seed, layout.index], tf.int64)

  def transform(index, example):
    example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    return {'clips': _train_clip(example[features.input_key], example_seed, c),
            'label': tf.cast(example[features.label_key], tf.int32)}

  ds = ds.map(transform, num_parallel_calls=AUTOTUNE, deterministic=True)
  return iter(tfds.as_numpy(ds.batch(batch, drop_remainder=True).prefetch(c.prefetch_batches)))


def test_views(c, *, layout):
  """The old multi-view test stream (K clips × crops per video) of ``config.data`` ``c``: float32 views."""
  builder = builders.prepared_builder(c, [c.eval_split])
  features = builders.dataset_features(builder)
  ds = _read_share(builder, c.eval_split, layout, shuffle=False, seed=0, features=features)

  def clips_of(example):
    encoded = example[features.input_key]
    indices = _tf_test_clip_indices(tf.shape(encoded)[0], c.num_frames, c.frame_stride, c.test_num_clips)
    return tf.data.Dataset.from_tensor_slices({'indices': indices}).map(lambda x: {**x, 'encoded': encoded})

  def crops_of(clip):
    frames = _resize_short(_decode_frames(tf.gather(clip['encoded'], clip['indices'])), c.test_short_side)
    shape = tf.shape(frames)
    offsets = _tf_crop_offsets(shape[1], shape[2], c.test_crop_size, c.test_num_crops)
    crops = tf.map_fn(lambda o: frames[:, o[0]:o[0] + c.test_crop_size, o[1]:o[1] + c.test_crop_size, :],
                      offsets, fn_output_signature=tf.float32)
    return {'clips': _normalize(crops, c)}

  ds = ds.flat_map(clips_of).map(crops_of, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
  return tfds.as_numpy(ds.batch(c.eval_global_batch_size).prefetch(c.prefetch_batches))
