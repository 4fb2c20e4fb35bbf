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

import functools
import math
from typing import Iterator, Optional

import numpy as np

from nonlocal_jax.data import batching
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

  def _write_views(self, batches: batching.RowBatches, local: int) -> int:
    # Example ``local``'s views, written into their rows by the worker that made them.
    views, label = self._reader.eval_views(self._first + local, self._mode)
    if len(views) != self.views_per_example:
      raise RuntimeError(f'Example {self._first + local} gave {len(views)} views, not {self.views_per_example}.')
    key, id_key = _keys(self._reader)
    for view, pixels in enumerate(views):
      arrays, row = batches.row(local * self.views_per_example + view)
      arrays['view_side'][row] = transforms.place(pixels, arrays[key][row])
      # Interleaved ids (local index × processes + process) are unique across processes without knowing offsets.
      arrays[id_key][row] = local * self._layout.count + self._layout.index
      arrays['label'][row], arrays['mask'][row] = label, True
      if 'view_index' in arrays:
        arrays['view_index'][row] = view  # clip × crops + crop
    return local

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    batches = batching.RowBatches(self.batch_size, functools.partial(_empty_batch, self._reader, self._mode,
                                                                     self.batch_size))
    count = 0
    # Examples come back in order, so when example ``local`` is back every view before its last is written.
    for local in workers.ordered_map(functools.partial(self._write_views, batches), range(self.num_examples),
                                     self._workers, self._ahead):
      while (count + 1) * self.batch_size <= (local + 1) * self.views_per_example:
        yield batches.take(count)
        count += 1
    # The last batch is padded; processes with a smaller share add fully masked batches, so all run the same steps.
    while count < self.num_batches:
      yield batches.take(count)
      count += 1


def _keys(reader) -> tuple[str, str]:
  return ('clips', 'video_id') if reader.features.kind == 'video' else ('image', 'image_id')


def _empty_batch(reader, mode: str, size: int) -> dict[str, np.ndarray]:
  # Every row padding (mask False, zeros) until a worker writes it; views go in the corner (transforms.place).
  c, features = reader.config, reader.features
  key, id_key = _keys(reader)
  video = features.kind == 'video'
  side = c.test_crop_size if (video and mode == 'test') else c.crop_size
  out = {key: np.zeros((size,) + ((c.num_frames,) if video else ()) + (side, side, 3), np.uint8),
         'view_side': np.full(size, side, np.int32), id_key: np.zeros(size, np.int32),
         'label': (np.zeros((size, features.num_classes), np.float32) if features.multi_label
                   else np.zeros(size, np.int32)),
         'mask': np.zeros(size, bool)}
  if video:
    out['view_index'] = np.zeros(size, np.int32)
  return out


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
