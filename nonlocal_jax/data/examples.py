"""One example of a prepared split, as the pipelines use it: its encoded frames, its label, and its views.

An example is read by position (``nonlocal_jax.data.records``) and parsed as the ``tf.train.Example`` TFDS wrote:
a video's frames are its input feature's list of JPEG/PNG strings (an image is a list of one), the label an int.
Nothing is decoded until a view is asked for, and then only the frames and the window the view needs.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np

from nonlocal_jax.data import builders
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

  def __len__(self) -> int:
    return len(self.source)

  def read(self, index: int) -> Example:
    """The example at position ``index`` of the split."""
    feature = self.source.example(index).features.feature
    frames = feature[self.features.input_key].bytes_list.value
    label = self._label(feature[self.features.label_key].int64_list.value)
    if not frames:
      raise ValueError(f'Example {index} of {self.features.input_key!r} holds no frame: prepare the dataset again.')
    height, width = image_header.frame_size(frames[0])
    return Example(frames, label, height, width)

  def _label(self, values) -> Union[int, np.ndarray]:
    if not self.features.multi_label:
      return int(values[0])
    # A class listed twice is still one positive; an example without any class is a row of zeros.
    row = np.zeros(self.features.num_classes, np.float32)
    row[np.asarray(values, np.int64)] = 1.0
    return row

  def train_view(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, bool, Union[int, np.ndarray]]:
    """The paper's training view (its window: uint8 (T, side, side, 3), or (side, side, 3) for an image, side at
    most ``crop_size``; ``transforms.place`` puts it in a batch), whether the device flips it, and the label.

    The random choices are drawn from ``rng`` in a fixed order: the clip's window in time, the scale, the crop's
    place, the flip.
    """
    c = self.config
    example = self.read(index)
    video = self.features.kind == 'video'
    indices = (sampling.train_clip_indices(len(example.frames), c.num_frames, c.frame_stride, rng) if video
               else np.zeros(1, np.int64))
    window, flip = sampling.train_window(example.height, example.width, c, rng)
    pixels = self._views(index, example, indices, [window], c.crop_size)[0]
    return (pixels if video else pixels[0]), flip, example.label

  def eval_views(self, index: int, clip: Optional[int], mode: str) -> tuple[list, Union[int, np.ndarray]]:
    """The evaluation views of example ``index`` (windows, as ``train_view``'s) and its label.

    ``mode='test'``: clip ``clip`` of the ``test_num_clips`` (time positions ``sampling.test_clip_indices``) in
    ``test_num_crops`` crops of ``test_crop_size`` along the longer side of the frame scaled to ``test_short_side``.
    ``mode='val'``: the centre clip in one centre ``crop_size`` crop. Images: one centre ``crop_size`` crop.
    """
    c = self.config
    example = self.read(index)
    n = len(example.frames)
    if self.features.kind == 'image':
      indices, crops, size = np.zeros(1, np.int64), 1, c.crop_size
    elif mode == 'val':
      indices, crops, size = sampling.center_clip_indices(n, c.num_frames, c.frame_stride), 1, c.crop_size
    else:
      indices = sampling.test_clip_indices(n, c.num_frames, c.frame_stride, c.test_num_clips)[clip]
      crops, size = c.test_num_crops, c.test_crop_size
    short = c.test_short_side
    windows = sampling.test_windows(example.height, example.width, size, short, crops)
    views = self._views(index, example, indices, windows, size)
    if self.features.kind == 'image':
      views = [v[0] for v in views]
    return views, example.label

  def _views(self, index, example, indices, windows, size) -> list[np.ndarray]:
    if self._cache is not None:
      frames = self._cache.get(index)
      if frames is None:
        frames = self._cache.setdefault(index, self._decoder.decode_all(example.frames))
      frames = frames[indices]
      return [self._decoder.pixels(frames, tuple(int(v) for v in w), size) for w in windows]
    encoded = [example.frames[i] for i in indices]
    if len(windows) == 1:
      return [self._decoder.encoded(encoded, tuple(int(v) for v in windows[0]), size)]
    return self._decoder.encoded_crops(encoded, windows, size)  # The region the crops span is decoded once.
