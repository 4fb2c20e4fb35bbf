"""Which frames make a clip, and where the crops go (docs/paper.md §5).

Plain NumPy: the pipelines plan every view here, in the stored frame's pixels, before anything is decoded
(``nonlocal_jax.data.transforms`` then decodes only the planned window). Randomness comes from the generator passed
in, which the training stream seeds per example (``nonlocal_jax.data.order``).

Conventions: a video has ``num_frames`` stored frames; a clip is ``clip_length`` frames taken every ``stride``
frames; indices past the end wrap around (``% num_frames``), so a video shorter than the clip's window loops,
as in the official code.
"""

from __future__ import annotations

import numpy as np


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


def window_side(height: int, width: int, crop_size: int, short_side: int) -> int:
  """Side, in stored pixels, of the square that becomes a ``crop_size`` crop once the frame is scaled to a shorter
  side of ``short_side``: ``crop_size · min(height, width) / short_side``, to the nearest pixel, at most the frame."""
  short = min(height, width)
  return int(min(max(round(crop_size * short / short_side), 1), short))


def train_crop_window(c) -> int:
  """Side of the training crop in the scaled frame: ``train_crop_window``, or ``crop_size`` when it is None (or a
  config without the field), the views then being crops with no resize."""
  return getattr(c, 'train_crop_window', None) or c.crop_size


def train_window(height: int, width: int, c, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], bool]:
  """The training view of a (height, width) frame: (top, left, side, side) in stored pixels, and whether to flip.

  The paper's augmentation (docs/paper.md §5): the shorter side scaled to s, uniform in [train_short_side_min,
  train_short_side_max], then a uniform random ``crop_size`` square, then a horizontal flip with probability 1/2
  (if ``random_flip``). Planned in stored pixels: a uniform square of side ``window_side(.., s)``. With
  ``train_crop_window`` set (Charades: 224) the square cut from the scaled frame has that side, and the device
  resizes it to ``crop_size`` (288) like any view.
  """
  short_side = int(rng.integers(c.train_short_side_min, c.train_short_side_max + 1))
  side = window_side(height, width, train_crop_window(c), short_side)
  top = int(rng.integers(0, height - side + 1))
  left = int(rng.integers(0, width - side + 1))
  flip = bool(c.random_flip) and bool(rng.random() < 0.5)
  return (top, left, side, side), flip


def test_windows(height: int, width: int, crop_size: int, short_side: int, num_crops: int) -> np.ndarray:
  """The ``num_crops`` test views of a frame, (num_crops, 4) rows of (top, left, side, side) in stored pixels:
  ``crop_offsets``'s layout (start, centre, end of the longer side) applied to squares of ``window_side``."""
  side = window_side(height, width, crop_size, short_side)
  offsets = crop_offsets(height, width, side, num_crops)
  return np.concatenate([offsets, np.full_like(offsets, side)], axis=1)
