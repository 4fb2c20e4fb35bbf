"""The training input: an endless, deterministic stream of augmented clips (or images) for this process.

Global batch b holds the examples at stream positions [b·B, (b+1)·B) (``nonlocal_jax.data.order``: whole epochs,
each shuffled by the seed); this process reads its slice of each, in ``num_workers`` threads, by position
(``nonlocal_jax.data.records``). So the stream is a function of the seed alone (not of the number of processes or
threads), and a run resumed at batch k starts reading at batch k: nothing before it is read again.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Optional

import numpy as np

from nonlocal_jax.data import batching
from nonlocal_jax.data import builders
from nonlocal_jax.data import examples
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import order as order_lib
from nonlocal_jax.data import records
from nonlocal_jax.data import transforms
from nonlocal_jax.data import workers


def create_train_iterator(data_config, *, seed: int, split: Optional[str] = None,
                          layout: Optional[layout_lib.ProcessLayout] = None, start_batch: int = 0
                          ) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator of training batches of ``config.data`` (video clips or images), for this process.

  Clips: ``num_frames`` frames every ``frame_stride`` from a random window (short videos loop), the paper's scale
  jitter in [train_short_side_min, train_short_side_max], a random ``crop_size`` square and a random horizontal
  flip (``sampling.train_window``). A batch holds ``clips`` uint8 (B, T, H, W, 3) (``image`` (B, H, W, 3) for
  images) with ``view_side`` int32 (B,) and ``view_flip`` bool (B,): the side of each view's window, which the
  train step resizes to the full view on the device, whether it then flips it, before normalising
  (``nonlocal_jax.data.device_input``); and ``label`` int32 (B,) (multi-label datasets: float32
  (B, num_classes) multi-hot).

  ``start_batch`` resumes the stream: the iterator yields exactly what a fresh one yields after that many
  batches, without reading the examples before it.
  """
  c = data_config
  layout = layout or layout_lib.ProcessLayout.from_jax()
  batch = layout_lib.local_batch_size(c.global_batch_size, layout)
  split = split or c.train_split
  builder = builders.prepared_builder(c, [split])
  features = builders.dataset_features(builder)
  transforms.check_settings(c, features.kind)
  reader = examples.ExampleReader(records.open_split(builder, split), features, c,
                                  cache_decoded=bool(c.get('cache_decoded', False)) and features.kind == 'video')
  order = order_lib.TrainOrder(len(reader), seed)

  shape = ((c.num_frames,) if features.kind == 'video' else ()) + (c.crop_size, c.crop_size, 3)
  key = 'clips' if features.kind == 'video' else 'image'
  label_shape, label_dtype = ((features.num_classes,), np.float32) if features.multi_label else ((), np.int32)
  batches = batching.RowBatches(batch, lambda: {key: np.zeros((batch,) + shape, np.uint8),
                                                'view_side': np.zeros(batch, np.int32),
                                                'view_flip': np.zeros(batch, bool),
                                                'label': np.zeros((batch,) + label_shape, label_dtype)})

  def write_view(job):
    # Row k of this process's stream, written by the worker that made it (the consumer only hands batches out).
    k, position = job
    pixels, flip, label = reader.train_view(order.example(position), order_lib.augmentation_rng(seed, position))
    arrays, row = batches.row(k)
    arrays['view_side'][row] = transforms.place(pixels, arrays[key][row])
    arrays['view_flip'][row], arrays['label'][row] = flip, label
    return k

  positions = itertools.chain.from_iterable(order_lib.process_positions(b, c.global_batch_size, layout)
                                            for b in itertools.count(int(start_batch)))
  num_workers = c.get('num_workers', 0) or workers.default_workers()
  return _in_order(batches, workers.ordered_map(write_view, enumerate(positions), num_workers,
                                                ahead=max(c.prefetch_batches, 1) * batch + num_workers))


def _in_order(batches: batching.RowBatches, written: Iterator[int]) -> Iterator[dict[str, np.ndarray]]:
  # A generator, so the worker threads start at the first next(), not when the stream is created. Rows come back
  # in order, so when row k is back every row before it is written.
  for k in written:
    if (k + 1) % batches.size == 0:
      yield batches.take(k // batches.size)
