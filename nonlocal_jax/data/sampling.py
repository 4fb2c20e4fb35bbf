"""Which frames make a clip, and where the crops go (docs/paper.md §5).

Each rule exists twice: a NumPy function (the reference, easy to test and read) and a TensorFlow function with
the same name and a ``tf_`` prefix that the tf.data pipeline runs inside its graph. Tests check that the two
agree.

Conventions: a video has ``num_frames`` stored frames; a clip is ``clip_length`` frames taken every ``stride``
frames; indices past the end wrap around (``% num_frames``), so a video shorter than the clip's window loops,
as in the official code.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def clip_window(clip_length: int, stride: int) -> int:
  """Number of stored frames a clip spans: ``clip_length * stride`` (32×2 clips span 64 frames)."""
  return clip_length * stride


def train_clip_indices(num_frames: int, clip_length: int, stride: int, rng: np.random.Generator) -> np.ndarray:
  """Frame indices of one training clip: a random window, then every ``stride``-th frame (wrapping).

  The window start is uniform over the starts that keep the window inside the video; a video shorter than the
  window starts at 0 and loops.
  """
  _check(num_frames, clip_length, stride)
  last_start = max(num_frames - clip_window(clip_length, stride), 0)
  start = int(rng.integers(0, last_start + 1))
  return (start + stride * np.arange(clip_length)) % num_frames


def test_clip_indices(num_frames: int, clip_length: int, stride: int, num_clips: int) -> np.ndarray:
  """Frame indices of the ``num_clips`` test clips, shape (num_clips, clip_length).

  Clip j starts at ``floor(num_frames * j / num_clips)`` (the paper's and the official code's rule), and its
  indices wrap, so the last clips of a short video reuse its first frames.
  """
  _check(num_frames, clip_length, stride)
  if num_clips < 1:
    raise ValueError(f'num_clips must be at least 1, got {num_clips}.')
  starts = (num_frames * np.arange(num_clips)) // num_clips
  return (starts[:, None] + stride * np.arange(clip_length)[None, :]) % num_frames


def center_clip_indices(num_frames: int, clip_length: int, stride: int) -> np.ndarray:
  """Frame indices of the single centre clip used for fast validation (the window centred in the video)."""
  _check(num_frames, clip_length, stride)
  start = max(num_frames - clip_window(clip_length, stride), 0) // 2
  return (start + stride * np.arange(clip_length)) % num_frames


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) after scaling the shorter side to ``short_side``, keeping the aspect ratio (rounded)."""
  if height <= width:
    return short_side, max(1, int(round(width * short_side / height)))
  return max(1, int(round(height * short_side / width))), short_side


def crop_offsets(height: int, width: int, crop_size: int, num_crops: int) -> np.ndarray:
  """Top-left corners (y, x) of the test crops, shape (num_crops, 2).

  With 3 crops (the paper's protocol) they sit at the start, centre and end of the longer side and are centred
  on the shorter side; with 1 crop it is the centre crop; other counts are spread evenly along the longer side.
  """
  if crop_size > min(height, width):
    raise ValueError(f'crop_size {crop_size} is larger than the frame ({height}x{width}): lower the crop size or '
                     'raise the short side the frames are scaled to.')
  if num_crops < 1:
    raise ValueError(f'num_crops must be at least 1, got {num_crops}.')
  long_is_height = height > width
  long_len, short_len = (height, width) if long_is_height else (width, height)
  if num_crops == 1:
    along = np.array([(long_len - crop_size) // 2])
  else:
    along = ((long_len - crop_size) * np.arange(num_crops)) // (num_crops - 1)
  across = np.full_like(along, (short_len - crop_size) // 2)
  ys, xs = (along, across) if long_is_height else (across, along)
  return np.stack([ys, xs], axis=1)


def _check(num_frames: int, clip_length: int, stride: int) -> None:
  if num_frames < 1:
    raise ValueError(f'A video needs at least one frame, got num_frames={num_frames}.')
  if clip_length < 1 or stride < 1:
    raise ValueError(f'clip_length and stride must be at least 1, got {clip_length} and {stride}.')


# TensorFlow twins, used inside tf.data maps. Seeds are stateless (shape [2] int) so that a clip's augmentation
# depends only on the run's seed and the example's position in the stream, never on thread scheduling.


def tf_train_clip_indices(num_frames: tf.Tensor, clip_length: int, stride: int, seed: tf.Tensor) -> tf.Tensor:
  """TensorFlow twin of :func:`train_clip_indices` with a stateless seed."""
  num_frames = tf.cast(num_frames, tf.int32)
  last_start = tf.maximum(num_frames - clip_window(clip_length, stride), 0)
  start = tf.random.stateless_uniform([], seed, minval=0, maxval=last_start + 1, dtype=tf.int32)
  return (start + stride * tf.range(clip_length)) % num_frames


def tf_test_clip_indices(num_frames: tf.Tensor, clip_length: int, stride: int, num_clips: int) -> tf.Tensor:
  """TensorFlow twin of :func:`test_clip_indices`."""
  num_frames = tf.cast(num_frames, tf.int32)
  starts = (num_frames * tf.range(num_clips)) // num_clips
  return (starts[:, None] + stride * tf.range(clip_length)[None, :]) % num_frames


def tf_center_clip_indices(num_frames: tf.Tensor, clip_length: int, stride: int) -> tf.Tensor:
  """TensorFlow twin of :func:`center_clip_indices`."""
  num_frames = tf.cast(num_frames, tf.int32)
  start = tf.maximum(num_frames - clip_window(clip_length, stride), 0) // 2
  return (start + stride * tf.range(clip_length)) % num_frames


def tf_scaled_size(height: tf.Tensor, width: tf.Tensor, short_side: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """TensorFlow twin of :func:`scaled_size` (round half to even, like Python's ``round``)."""
  h = tf.cast(height, tf.float64)
  w = tf.cast(width, tf.float64)
  s = tf.cast(short_side, tf.float64)
  new_h = tf.where(h <= w, s, tf.math.round(h * s / w))
  new_w = tf.where(h <= w, tf.math.round(w * s / h), s)
  return tf.cast(tf.maximum(new_h, 1.0), tf.int32), tf.cast(tf.maximum(new_w, 1.0), tf.int32)


def tf_crop_offsets(height: tf.Tensor, width: tf.Tensor, crop_size: int, num_crops: int) -> tf.Tensor:
  """TensorFlow twin of :func:`crop_offsets`, shape (num_crops, 2); the caller guarantees the crop fits."""
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


def tf_random_crop_offset(height: tf.Tensor, width: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
  """A uniform random top-left corner (y, x) for a ``crop_size`` square inside a (height, width) frame."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  y = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=tf.cast(height, tf.int32) - crop_size + 1,
                                  dtype=tf.int32)
  x = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=tf.cast(width, tf.int32) - crop_size + 1,
                                  dtype=tf.int32)
  return tf.stack([y, x])
