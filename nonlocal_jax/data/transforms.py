"""The tf.data operations on frames: decoding, scaling, cropping, the training augmentation and normalisation.

Every function runs inside a tf.data graph. Randomness is stateless: it comes from the seeds passed in, so a
clip's augmentation is a function of its seed alone. ``c`` is ``config.data`` (documented in
``configs/default.py``); ``check_settings`` checks that the fields these operations read fit each other.
"""

from __future__ import annotations

import tensorflow as tf

from nonlocal_jax.data import normalization
from nonlocal_jax.data import sampling


def check_settings(c, kind: str) -> None:
  """Raises ValueError naming the ``config.data`` field that does not fit another's for a ``kind`` ('video'/'image').

  Each field's own range is declared in configs/default.py and checked at start-up (``nonlocal_jax.config_ranges``).
  """
  video = kind == 'video'
  checks = [
      (c.train_short_side_min <= c.train_short_side_max, 'train_short_side_min', 'at most train_short_side_max'),
      (c.crop_size <= c.train_short_side_min, 'crop_size', 'at most train_short_side_min'),
      (c.crop_size <= c.test_short_side, 'crop_size', 'at most test_short_side'),
      (not video or c.test_crop_size <= c.test_short_side, 'test_crop_size', 'at most test_short_side'),
  ]
  for ok, field, need in checks:
    if not ok:
      raise ValueError(f'config.data.{field} must be {need}: fix it in the config.')


def normalize(x: tf.Tensor, c) -> tf.Tensor:
  """``x`` as float32, normalised as ``config.data.normalization`` says (``nonlocal_jax.data.normalization``)."""
  x = tf.cast(x, tf.float32)
  constants = normalization.mean_and_std(c)
  if constants is None:
    return x
  mean, std = constants
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def decode_frames(encoded: tf.Tensor) -> tf.Tensor:
  """Decodes a vector of JPEG/PNG frames into uint8 (T, H, W, 3); only the frames a clip needs are decoded."""
  return tf.map_fn(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False), encoded,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def resize_short(frames: tf.Tensor, short_side) -> tf.Tensor:
  """``frames`` (..., H, W, C) scaled bilinearly so that their shorter side is ``short_side``."""
  shape = tf.shape(frames)
  new_h, new_w = sampling.tf_scaled_size(shape[-3], shape[-2], short_side)
  return tf.image.resize(frames, tf.stack([new_h, new_w]), method='bilinear')


def center_crop(frames: tf.Tensor, size: int) -> tf.Tensor:
  """The centre ``size``×``size`` square of ``frames`` (..., H, W, C)."""
  shape = tf.shape(frames)
  offset = sampling.tf_crop_offsets(shape[-3], shape[-2], size, 1)[0]
  return frames[..., offset[0]:offset[0] + size, offset[1]:offset[1] + size, :]


def train_clip(video: tf.Tensor, seed: tf.Tensor, c, decoded: bool = False) -> tf.Tensor:
  """A training clip of ``video`` (encoded frames, or uint8 frames if ``decoded``): sampled, augmented, normalised."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  indices = sampling.tf_train_clip_indices(tf.shape(video)[0], c.num_frames, c.frame_stride, seeds[0])
  frames = tf.gather(video, indices) if decoded else decode_frames(tf.gather(video, indices))
  return _augment(frames, seeds[1:], c, time_axis=True)


def train_image(image: tf.Tensor, seed: tf.Tensor, c) -> tf.Tensor:
  """A training view of ``image``: augmented as a clip's frames are, normalised."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  return _augment(image, seeds, c, time_axis=False)


def _augment(frames: tf.Tensor, seeds: tf.Tensor, c, time_axis: bool) -> tf.Tensor:
  short = tf.random.stateless_uniform([], seeds[0], minval=c.train_short_side_min,
                                      maxval=c.train_short_side_max + 1, dtype=tf.int32)
  frames = resize_short(frames, short)
  shape = tf.shape(frames)
  offset = sampling.tf_random_crop_offset(shape[-3], shape[-2], c.crop_size, seeds[1])
  frames = frames[..., offset[0]:offset[0] + c.crop_size, offset[1]:offset[1] + c.crop_size, :]
  if c.random_flip:
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[-2]), lambda: frames)
  frames = normalize(frames, c)
  lead = [c.num_frames] if time_axis else []
  return tf.ensure_shape(frames, lead + [c.crop_size, c.crop_size, 3])


def label(value: tf.Tensor, features) -> tf.Tensor:
  """An example's label as batches carry it: its class as int32, or for a multi-label dataset
  (``features.multi_label``: ``value`` lists the example's classes) a multi-hot float32 (num_classes,) row."""
  if features.multi_label:
    # A sum of one-hots, capped at 1: a class listed twice is still one positive, and no class gives zeros.
    hot = tf.one_hot(tf.cast(value, tf.int32), features.num_classes, dtype=tf.float32)
    return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
  return tf.cast(value, tf.int32)
