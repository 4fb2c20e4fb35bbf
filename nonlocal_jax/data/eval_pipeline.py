"""The evaluation input: every view of every example of this process's share once, the last batch padded.

A batch holds ``clips`` float32 (B, T, H, W, 3) (``image`` (B, H, W, 3) for images), ``label`` int32 (B,)
(multi-label datasets: float32 (B, num_classes) multi-hot), ``mask`` bool (B,) (False on padding), and for
videos ``video_id`` int32 (B,) (one id per video, shared by all its views, unique across processes) and
``view_index`` int32 (B,) (clip × crops + crop); for images ``image_id``. Evaluation pads its last batch
(``mask`` False) instead of dropping it, and every process yields the same number of batches, so collective steps
never hang on an uneven split.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from nonlocal_jax.data import builders
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import sampling
from nonlocal_jax.data import transforms

AUTOTUNE = tf.data.AUTOTUNE


class EvalDataset:
  """One pass over an evaluation split per ``iter()``: every view of every example once, padded at the end.

  Attributes:
    num_batches: batches per pass, the same on every process.
    views_per_example: views each video gives (clips × crops; 1 for images and validation mode).
    num_examples: videos (or images) this process evaluates.
    batch_size: per-process batch.
  """

  def __init__(self, ds: tf.data.Dataset, *, num_batches: int, views_per_example: int, num_examples: int,
               batch_size: int):
    self._ds = ds
    self.num_batches = num_batches
    self.views_per_example = views_per_example
    self.num_examples = num_examples
    self.batch_size = batch_size

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    spec = self._ds.element_spec
    count = 0
    for batch in tfds.as_numpy(self._ds):
      count += 1
      yield _pad(batch, self.batch_size)
    # Processes with a smaller share fill with fully masked batches so that all run the same number of steps.
    while count < self.num_batches:
      count += 1
      empty = {k: np.zeros((0,) + tuple(s.shape[1:]), s.dtype.as_numpy_dtype) for k, s in spec.items()}
      yield _pad(empty, self.batch_size)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch['mask'])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


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
  ds, own, largest = layout_lib.read_share(builder, split, layout, shuffle=False, seed=0, features=features)
  ds = ds.enumerate()
  id_key = 'video_id' if features.kind == 'video' else 'image_id'

  def common(index, example):
    # Interleaved ids (local index × processes + process) are unique across processes without knowing offsets.
    return {id_key: tf.cast(index * layout.count + layout.index, tf.int32),
            'label': transforms.label(example[features.label_key], features)}

  if features.kind == 'image':
    views = 1

    def image_view(index, example):
      image = transforms.resize_short(example[features.input_key], c.test_short_side)
      image = transforms.center_crop(image, c.crop_size)
      return {'image': tf.ensure_shape(transforms.normalize(image, c), [c.crop_size, c.crop_size, 3]),
              **common(index, example), 'mask': tf.constant(True)}

    ds = ds.map(image_view, num_parallel_calls=AUTOTUNE)
  elif mode == 'val':
    views = 1

    def center_view(index, example):
      encoded = example[features.input_key]
      indices = sampling.tf_center_clip_indices(tf.shape(encoded)[0], c.num_frames, c.frame_stride)
      frames = transforms.resize_short(transforms.decode_frames(tf.gather(encoded, indices)), c.test_short_side)
      frames = transforms.center_crop(frames, c.crop_size)
      return {'clips': tf.ensure_shape(transforms.normalize(frames, c),
                                       [c.num_frames, c.crop_size, c.crop_size, 3]),
              **common(index, example), 'view_index': tf.constant(0, tf.int32), 'mask': tf.constant(True)}

    ds = ds.map(center_view, num_parallel_calls=AUTOTUNE)
  else:
    views = c.test_num_clips * c.test_num_crops

    def clips_of(index, example):
      encoded = example[features.input_key]
      indices = sampling.tf_test_clip_indices(tf.shape(encoded)[0], c.num_frames, c.frame_stride,
                                              c.test_num_clips)
      info = common(index, example)
      # The encoded video is captured, not copied: its K clips are decoded in parallel by the next map.
      per_clip = tf.data.Dataset.from_tensor_slices({'indices': indices, 'clip': tf.range(c.test_num_clips)})
      return per_clip.map(lambda x: {**x, **info, 'encoded': encoded})

    def crops_of(clip):
      frames = transforms.decode_frames(tf.gather(clip['encoded'], clip['indices']))
      frames = transforms.resize_short(frames, c.test_short_side)
      shape = tf.shape(frames)
      offsets = sampling.tf_crop_offsets(shape[1], shape[2], c.test_crop_size, c.test_num_crops)
      crops = tf.map_fn(lambda o: frames[:, o[0]:o[0] + c.test_crop_size, o[1]:o[1] + c.test_crop_size, :],
                        offsets, fn_output_signature=tf.float32)
      crops = tf.ensure_shape(transforms.normalize(crops, c),
                              [c.test_num_crops, c.num_frames, c.test_crop_size, c.test_crop_size, 3])
      n = c.test_num_crops
      return {'clips': crops, 'video_id': tf.fill([n], clip['video_id']),
              'label': tf.repeat(clip['label'][None], n, axis=0),  # A class or a multi-hot row per crop.
              'view_index': clip['clip'] * n + tf.range(n, dtype=tf.int32), 'mask': tf.fill([n], True)}

    ds = ds.flat_map(clips_of).map(crops_of, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
  ds = ds.batch(batch, drop_remainder=False).prefetch(c.prefetch_batches)
  num_batches = math.ceil(largest * views / batch)
  return EvalDataset(ds, num_batches=num_batches, views_per_example=views, num_examples=own, batch_size=batch)
