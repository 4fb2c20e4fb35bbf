"""One example of a prepared split, as the pipelines use it: its encoded frames, its label, and its views.

An example is read by position (``nonlocal_jax.data.records``) and parsed as the ``tf.train.Example`` TFDS wrote:
a video's frames are its input feature's list of JPEG/PNG strings (an image is a list of one), the label an int
(a multi-label dataset's: its classes). A dataset of action intervals (Charades, ``DatasetFeatures.actions_key``)
also gives each example its actions, and its training clips their own labels (``clip_labels``). Nothing is decoded
until a view is asked for, and then only the frames and the window the view needs.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np

from nonlocal_jax.data import builders
from nonlocal_jax.data import clip_labels
from nonlocal_jax.data import image_header
from nonlocal_jax.data import records
from nonlocal_jax.data import sampling
from nonlocal_jax.data import transforms


@dataclasses.dataclass(frozen=True)
class Example:
  """The parts of one stored example the pipelines read."""
  frames: Sequence[bytes]  # Encoded frames (one for an image).
  label: Union[int, np.ndarray]  # The class, or for a multi-label dataset a multi-hot float32 (num_classes,) row.
  height: int  # Of the stored frames (read from the first frame's header).
  width: int
  actions: Optional[clip_labels.Actions] = None  # Its action intervals, for datasets that store them (Charades).


class ExampleReader:
  """Reads the examples of one split and makes their training and evaluation views.

  ``cache_decoded`` keeps each video's decoded frames in memory after its first read (small datasets only: the
  synthetic benchmark's PNG frames cost as much to decode as its model costs to train).
  """

  def __init__(self, source: records.Source, features: builders.DatasetFeatures, c, cache_decoded: bool = False):
    self.source = source
    self.features = features
    self.config = c  # config.data
    self._decoder = transforms.FrameDecoder()
    self._cache: Optional[dict[int, np.ndarray]] = {} if cache_decoded else None
    # A training clip's label: the example's, or (action intervals) the classes of the actions the clip overlaps.
    self._train_label = self._label_of_actions if features.actions_key else (lambda example, indices: example.label)

  def __len__(self) -> int:
    return len(self.source)

  def read(self, index: int) -> Example:
    """The example at position ``index`` of the split."""
    example, frames = self.source.example_and_values(index, self.features.input_key)
    feature = example.features.feature
    label = self._label(feature[self.features.label_key].int64_list.value)
    if not frames:
      raise ValueError(f'Example {index} of {self.features.input_key!r} holds no frame: prepare the dataset again.')
    height, width = image_header.frame_size(frames[0])
    return Example(frames, label, height, width, self._actions(feature) if self.features.actions_key else None)

  def _actions(self, feature) -> clip_labels.Actions:
    key = self.features.actions_key
    return clip_labels.Actions(np.asarray(feature[f'{key}/label'].int64_list.value, np.int64),
                               np.asarray(feature[f'{key}/start'].float_list.value, np.float64),
                               np.asarray(feature[f'{key}/end'].float_list.value, np.float64),
                               float(feature['frame_rate'].float_list.value[0]))

  def _label_of_actions(self, example: Example, indices: np.ndarray) -> np.ndarray:
    return clip_labels.clip_label(example.actions, indices, self.features.num_classes)

  def _label(self, values) -> Union[int, np.ndarray]:
    if not self.features.multi_label:
      return int(values[0])
    # A class listed twice is still one positive; an example without any class is a row of zeros.
    row = np.zeros(self.features.num_classes, np.float32)
    row[np.asarray(values, np.int64)] = 1.0
    return row

  def train_view(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, bool, Union[int, np.ndarray]]:
    """The paper's training view (its window: uint8 (T, side, side, 3), or (side, side, 3) for an image, side at
    most ``crop_size``; ``transforms.place`` puts it in a batch), whether the device flips it, and the label: the
    example's, or for a dataset of action intervals the clip's own (``clip_labels``: the classes of the actions
    that overlap the clip's time span; all zeros when it overlaps none).

    The random choices are drawn from ``rng`` in a fixed order: the clip's window in time, the scale, the crop's
    place, the flip.
    """
    c = self.config
    example = self.read(index)
    video = self.features.kind == 'video'
    indices = (sampling.train_clip_indices(len(example.frames), c.num_frames, c.frame_stride, rng) if video
               else np.zeros(1, np.int64))
    window, flip = sampling.train_window(example.height, example.width, c, rng)
    pixels = self._view(index, example, indices, window, c.crop_size)
    return (pixels if video else pixels[0]), flip, self._train_label(example, indices)

  def eval_views(self, index: int, mode: str) -> tuple[list, Union[int, np.ndarray]]:
    """The evaluation views of example ``index`` in ``view_index`` order (windows, as ``train_view``'s), and its
    label (the video's, also for a dataset of action intervals: every action of the video).

    ``mode='test'``: the ``test_num_clips`` clips (time positions ``sampling.test_clip_indices``), each in
    ``test_num_crops`` crops of ``test_crop_size`` along the longer side of the frame scaled to ``test_short_side``;
    a frame that several clips share is decoded once. ``mode='val'``: the centre clip in one centre ``crop_size``
    crop. Images: one centre ``crop_size`` crop.
    """
    c = self.config
    example = self.read(index)
    n = len(example.frames)
    short = c.test_short_side
    if self.features.kind == 'image' or mode == 'val':
      indices = (np.zeros(1, np.int64) if self.features.kind == 'image'
                 else sampling.center_clip_indices(n, c.num_frames, c.frame_stride))
      window = sampling.test_windows(example.height, example.width, c.crop_size, short, 1)[0]
      view = self._view(index, example, indices, window, c.crop_size)
      return [view[0] if self.features.kind == 'image' else view], example.label
    clips = sampling.test_clip_indices(n, c.num_frames, c.frame_stride, c.test_num_clips)
    size = c.test_crop_size
    windows = sampling.test_windows(example.height, example.width, size, short, c.test_num_crops)
    # The region the crops span, decoded once for every frame any clip uses; each view is cut from it.
    unique, position = np.unique(clips, return_inverse=True)
    top, left = windows[:, 0].min(), windows[:, 1].min()
    bottom, right = (windows[:, 0] + windows[:, 2]).max(), (windows[:, 1] + windows[:, 3]).max()
    region = self._decoder.encoded_window([example.frames[i] for i in unique],
                                          (int(top), int(left), int(bottom - top), int(right - left)))
    position = position.reshape(clips.shape)
    views = []
    for frames in position:
      clip = _frames_of(region, frames)
      for t, l, h, w in windows:
        crop = clip[:, t - top:t - top + h, l - left:l - left + w]
        views.append(crop if h <= size else self._decoder.pixels(crop, (0, 0, int(h), int(w)), size))
    return views, example.label

  def _view(self, index, example, indices, window, size) -> np.ndarray:
    window = tuple(int(v) for v in window)
    if self._cache is None:
      return self._decoder.encoded([example.frames[i] for i in indices], window, size)
    frames = self._cache.get(index)
    if frames is None:
      frames = self._cache.setdefault(index, self._decoder.decode_all(example.frames))
    return self._decoder.pixels(frames[indices], window, size)


def _frames_of(region: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """``region[positions]``, as a view of ``region`` (no copy) where the positions are evenly spaced, as a clip's
  are unless its indices wrap past the video's end; the batch copies each view once."""
  steps = np.diff(positions)
  if len(positions) > 1 and steps[0] > 0 and np.all(steps == steps[0]):
    return region[positions[0]:positions[-1] + 1:steps[0]]
  return region[positions]
