"""From stored frames to a view: only the window the view needs is decoded; resizing, flipping wait for the device.

The paper's recipe scales each frame so that its shorter side is s (random in [256, 320] for training, 256 for
testing) and then crops a square (docs/paper.md §5). A crop of side c from a frame scaled to shorter side s is the
stored frame's square of side c·short/s, resized to c: so a view is planned in the stored frame's pixels
(``nonlocal_jax.data.sampling``) and only that window is decoded (``tf.io.decode_and_crop_jpeg`` skips the IDCT
and colour conversion of everything else). Whole frames are never scaled.

A window no larger than the view (the paper's training views of frames stored at 256: sides 179 to 224) is
shipped as it is, in the top-left corner of the view's uint8 array with its side alongside (``view_side``); the
device resizes it, flips it (``view_flip``) and normalises it (``nonlocal_jax.data.device_input``), where that
work costs a fraction of a percent of a training step instead of half of the host's. A larger window (frames
stored larger than the views need) is resized here, bilinearly (half-pixel centres, no antialiasing, as
``tf.image.resize``).

``c`` is ``config.data`` (documented in configs/default.py); ``check_settings`` checks that the fields these
operations read fit each other.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

_JPEG_MARGIN = 4  # Pixels decoded around a window: beyond the reach of chroma upsampling (2 for 4:2:0, 4 for 4:1:1).


def check_settings(c, kind: str) -> None:
  """Raises ValueError naming the ``config.data`` field that does not fit another's for a ``kind`` ('video'/'image').

  Each field's own range is declared in configs/default.py and checked at start-up (``nonlocal_jax.config_ranges``).
  """
  video = kind == 'video'
  window = getattr(c, 'train_crop_window', None)
  checks = [
      (c.train_short_side_min <= c.train_short_side_max, 'train_short_side_min', 'at most train_short_side_max'),
      (window is not None or c.crop_size <= c.train_short_side_min, 'crop_size', 'at most train_short_side_min'),
      (window is None or window <= c.train_short_side_min, 'train_crop_window', 'at most train_short_side_min'),
      (c.crop_size <= c.test_short_side, 'crop_size', 'at most test_short_side'),
      (not video or c.test_crop_size <= c.test_short_side, 'test_crop_size', 'at most test_short_side'),
  ]
  for ok, field, need in checks:
    if not ok:
      raise ValueError(f'config.data.{field} must be {need}: fix it in the config.')


class FrameDecoder:
  """Produces views from encoded frames (or decoded uint8 frames): decode a square window, shrink it if it is
  larger than the view.

  A view comes back as its window, uint8 (T, side, side, 3) with side ≤ size (``place`` puts it into the batch's
  array). Flips and growing resizes are left to the device. One instance per pipeline: its TensorFlow functions
  are traced once and shared by all worker threads (TensorFlow releases the GIL while they run, so threads decode
  in parallel).
  """

  def __init__(self):
    # Concrete functions, called with tensors: a tf.function's argument binding costs ~1 ms a call, a tenth of
    # a small clip's decoding. No autograph: the functions write their control flow as tf.cond and tf.map_fn, and
    # autograph would write a source file per function into the temporary directory, left there by a killed run.
    frames, window, size = (tf.TensorSpec([None], tf.string), tf.TensorSpec([4], tf.int32),
                            tf.TensorSpec([], tf.int32))
    graph = functools.partial(tf.function, autograph=False)
    self._encoded = graph(lambda f, w, s: _shrink(_decode_window(f, w), s)).get_concrete_function(
        frames, window, size)
    self._pixels = graph(_shrink).get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.uint8), size)
    self._window = graph(_decode_window).get_concrete_function(frames, window)

  def encoded(self, frames, window, size: int) -> np.ndarray:
    """The view of the square ``window`` (top, left, side, side) of each encoded JPEG/PNG frame in ``frames``."""
    return self._encoded(tf.constant(list(frames)), _int32(window), _int32(size)).numpy()

  def pixels(self, frames: np.ndarray, window, size: int) -> np.ndarray:
    """As ``encoded``, from decoded uint8 frames (T, H, W, 3)."""
    top, left, side, _ = window
    pixels = frames[:, top:top + side, left:left + side]
    return pixels if side <= size else self._pixels(tf.constant(pixels), _int32(size)).numpy()

  def encoded_window(self, frames, window) -> np.ndarray:
    """uint8 (T, height, width, 3): ``window`` of each encoded frame, decoded and nothing else."""
    return self._window(tf.constant(list(frames)), _int32(window)).numpy()

  def decode_all(self, frames) -> np.ndarray:
    """uint8 (T, H, W, 3): every frame of ``frames`` decoded whole (for the in-memory cache of small datasets)."""
    return np.stack([tf.io.decode_image(f, channels=3, expand_animations=False).numpy() for f in frames])


def _int32(value) -> tf.Tensor:
  return tf.constant(np.asarray(value, np.int32))


def _shrink(pixels, size):
  # Only a window larger than the view is resized here; smaller ones grow on the device.
  side = tf.shape(pixels)[1]
  return tf.cond(side > size,
                 lambda: tf.cast(tf.round(tf.image.resize(pixels, tf.stack([size, size]))), tf.uint8),
                 lambda: pixels)


def place(view: np.ndarray, out: np.ndarray) -> int:
  """Writes the view ``view`` (..., side, side, 3) into the top-left corner of the zeroed ``out`` (..., size, size,
  3) and returns its side. The last row and column are repeated once: the device's resize reads one pixel past
  the window, as a resize of the window alone would clamp to its edge."""
  side = view.shape[-2]
  out[..., :side, :side, :] = view
  if side < out.shape[-2]:
    out[..., :side, side, :] = view[..., :, -1, :]
    out[..., side, :side + 1, :] = out[..., side - 1, :side + 1, :]
  return side


def _decode_window(frames, window):
  def decode(frame):
    return tf.cond(tf.io.is_jpeg(frame), lambda: _decode_jpeg_window(frame, window),
                   lambda: _crop(tf.io.decode_image(frame, channels=3, expand_animations=False), window))
  return tf.map_fn(decode, frames, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _decode_jpeg_window(frame, window):
  # A partial JPEG decode upsamples chroma without the pixels beyond its window, so its edge pixels differ from a
  # full decode's (in half of 360 random windows tried); decoding a margin around the window and dropping it gives
  # the full decode's pixels exactly (in all of them, from a margin of 2).
  shape = tf.image.extract_jpeg_shape(frame)
  top = tf.maximum(window[0] - _JPEG_MARGIN, 0)
  left = tf.maximum(window[1] - _JPEG_MARGIN, 0)
  bottom = tf.minimum(window[0] + window[2] + _JPEG_MARGIN, shape[0])
  right = tf.minimum(window[1] + window[3] + _JPEG_MARGIN, shape[1])
  wide = tf.io.decode_and_crop_jpeg(frame, tf.stack([top, left, bottom - top, right - left]), channels=3)
  return wide[window[0] - top:window[0] - top + window[2], window[1] - left:window[1] - left + window[3]]


def _crop(image, window):
  return image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
