"""The evaluation input: every view of every example of this process's share once, the last batch padded.

A batch holds ``clips`` uint8 (B, T, H, W, 3) (``image`` (B, H, W, 3) for images) with ``view_side`` int32 (B,)
(resized and normalised on the device by the eval step, ``nonlocal_jax.data.device_input``), ``label`` int32 (B,)
(multi-label datasets: float32 (B, num_classes) multi-hot), ``mask`` bool (B,) (False on padding), and for videos
``video_id`` int32 (B,) (one id per video, shared by all its views, unique across processes) and ``view_index``
int32 (B,) (clip × crops + crop); for images ``image_id``. Evaluation pads its last batch (``mask`` False)
instead of dropping it, and every process yields the same number of batches, so collective steps never hang on
an uneven split.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np

from nonlocal_jax.data import builders
from nonlocal_jax.data import examples
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import records
from nonlocal_jax.data import transforms
from nonlocal_jax.data import workers


class EvalDataset:
  """One pass over an evaluation split per ``iter()``: every view of every example once, padded at the end.

  Attributes:
    num_batches: batches per pass, the same on every process.
    views_per_example: views each video gives (clips × crops; 1 for images and validation mode).
    num_examples: videos (or images) this process evaluates.
    batch_size: per-process batch.
  """

  def __init__(self, reader: examples.ExampleReader, *, first: int, layout: layout_lib.ProcessLayout, mode: str,
               num_batches: int, clips: int, crops: int, num_examples: int, batch_size: int, num_workers: int,
               prefetch_batches: int):
    self._reader = reader
    self._first = first
    self._layout = layout
    self._mode = mode
    self._workers = num_workers
    # Jobs are whole examples: bound the decoded examples held ahead to what the prefetched batches need.
    self._ahead = max(prefetch_batches, 1) * math.ceil(batch_size / (clips * crops)) + num_workers
    self.num_batches = num_batches
    self.views_per_example = clips * crops
    self.num_examples = num_examples
    self.batch_size = batch_size

  def __len__(self) -> int:
    return self.num_batches

  def _views_of(self, local):
    views, label = self._reader.eval_views(self._first + local, self._mode)
    return local, views, label

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    jobs = range(self.num_examples)
    is_video = self._reader.features.kind == 'video'
    key, id_key = ('clips', 'video_id') if is_video else ('image', 'image_id')
    rows, count = [], 0
    template = _template(self._reader, key, id_key, is_video, self._mode)
    for local, views, label in workers.ordered_map(self._views_of, jobs, self._workers, self._ahead):
      for view, pixels in enumerate(views):
        # Interleaved ids (local index × processes + process) are unique across processes without knowing offsets.
        row = {key: pixels, id_key: local * self._layout.count + self._layout.index, 'label': label, 'mask': True}
        if is_video:
          row['view_index'] = view  # clip × crops + crop
        rows.append(row)
      while len(rows) >= self.batch_size:
        count += 1
        yield _stack(rows[:self.batch_size], self.batch_size, template)
        rows = rows[self.batch_size:]
    # The last batch is padded; processes with a smaller share add fully masked batches, so all run the same steps.
    while count < self.num_batches:
      count += 1
      yield _stack(rows, self.batch_size, template)
      rows = []


_INTEGER_KEYS = ('video_id', 'image_id', 'view_index')


def _stack(rows: list[dict], size: int, template: dict) -> dict[str, np.ndarray]:
  # Views are windows of at most the view's size, placed in the corner of a zeroed array (transforms.place).
  key = 'clips' if 'clips' in template else 'image'
  out = {key: np.zeros((size,) + template[key].shape, np.uint8),
         'view_side': np.full(size, template['view_side'], np.int32)}
  for i, row in enumerate(rows):
    out['view_side'][i] = transforms.place(row[key], out[key][i])
  for k, example in template.items():
    if k in (key, 'view_side'):
      continue
    example = np.asarray(example)
    integer = k in _INTEGER_KEYS or (k == 'label' and example.dtype.kind in 'iu')
    array = np.zeros((size,) + example.shape, np.int32 if integer else example.dtype)
    for i, row in enumerate(rows):
      array[i] = row[k]
    out[k] = array
  return out


def _template(reader, key, id_key, is_video, mode) -> dict:
  c = reader.config
  size = c.test_crop_size if (is_video and mode == 'test') else c.crop_size
  shape = ((c.num_frames,) if is_video else ()) + (size, size, 3)
  label = np.zeros(reader.features.num_classes, np.float32) if reader.features.multi_label else 0
  row = {key: np.zeros(shape, np.uint8), 'view_side': size, id_key: 0, 'label': label, 'mask': False}
  if is_video:
    row['view_index'] = 0
  return row


def create_eval_dataset(data_config, *, split: Optional[str] = None, mode: str = 'test',
                        layout: Optional[layout_lib.ProcessLayout] = None) -> EvalDataset:
  """The evaluation views of ``config.data``'s eval split for this process.

  ``mode='test'`` is the paper's protocol: ``test_num_clips`` clips evenly spaced in time (clip j starts at
  ⌊num_frames·j/K⌋, indices wrap) × ``test_num_crops`` crops of ``test_crop_size`` along the longer side after
  scaling the shorter side to ``test_short_side``; average the scores of the views that share a ``video_id``.
  ``mode='val'`` is the fast check during training: the centre clip, a centre ``crop_size`` crop. Images get one
  centre ``crop_size`` crop after scaling the shorter side to ``test_short_side``, in either mode.
  """
  c = data_config
  if mode not in ('test', 'val'):
    raise ValueError(f'Evaluation mode must be "test" or "val", got {mode!r}.')
  layout = layout or layout_lib.ProcessLayout.from_jax()
  batch = layout_lib.local_batch_size(c.eval_global_batch_size, layout, 'eval_global_batch_size')
  split = split or c.eval_split
  builder = builders.prepared_builder(c, [split])
  features = builders.dataset_features(builder)
  transforms.check_settings(c, features.kind)
  reader = examples.ExampleReader(records.open_split(builder, split), features, c)
  first, own, largest = layout_lib.share(len(reader), layout)
  clips, crops = (c.test_num_clips, c.test_num_crops) if (features.kind == 'video' and mode == 'test') else (1, 1)
  num_batches = math.ceil(largest * clips * crops / batch)
  return EvalDataset(reader, first=first, layout=layout, mode=mode, num_batches=num_batches, clips=clips,
                     crops=crops, num_examples=own, batch_size=batch,
                     num_workers=c.get('num_workers', 0) or workers.default_workers(),
                     prefetch_batches=c.prefetch_batches)
