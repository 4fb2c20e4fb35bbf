"""The training stream: shapes, determinism (for a seed, across worker threads and processes), whole epochs,
resuming without re-reading, the decoded-frame cache, and image datasets."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nonlocal_jax import data
from nonlocal_jax.data import _compat
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import records
from tests.data.conftest import small_video_config, synthetic_config

ONE = layout_lib.ProcessLayout(0, 1, 1)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(a, b):
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_training_is_deterministic_for_a_seed_whatever_the_threads(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=4, num_workers=1)
  first = _take(data.create_train_iterator(c, seed=3, layout=ONE), 3)
  c.num_workers = 3
  again = _take(data.create_train_iterator(c, seed=3, layout=ONE), 3)
  other = next(data.create_train_iterator(c, seed=4, layout=ONE))
  _assert_same(first, again)
  assert first[0]['clips'].dtype == np.uint8 and first[0]['clips'].shape == (4, 8, 32, 32, 3)
  assert not np.array_equal(first[0]['clips'], other['clips'])


def test_processes_read_disjoint_slices_of_the_same_global_batches(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=8)
  whole = _take(data.create_train_iterator(c, seed=1, layout=ONE), 3)
  parts = [_take(data.create_train_iterator(c, seed=1, layout=layout_lib.ProcessLayout(i, 2, 1)), 3)
           for i in range(2)]
  for step, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([p[step][key] for p in parts]), batch[key], err_msg=key)


def test_an_epoch_reads_every_example_once(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, global_batch_size=8)
  it = data.create_train_iterator(c, seed=0, layout=ONE)
  for _ in range(2):  # Two epochs, each a new order.
    clips = np.concatenate([next(it)['clips'] for _ in range(96 // 8)])
    # No augmentation changes pixels here (fixed scale, full crop, no flip): clips are the stored videos.
    assert len({clip.tobytes() for clip in clips}) == 96


class _CountingSource(records.Source):
  reads_by_index: list = []

  def read(self, i):
    _CountingSource.reads_by_index.append(i)
    return super().read(i)

  def example_and_values(self, i, key):
    _CountingSource.reads_by_index.append(i)
    return super().example_and_values(i, key)


@pytest.mark.parametrize('start', [1, 1000])
def test_resuming_starts_where_it_stopped_and_reads_nothing_before(synthetic_prepared, monkeypatch, start):
  c = synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=4, num_workers=2,
                       prefetch_batches=1)
  monkeypatch.setattr(records, 'Source', _CountingSource)
  _CountingSource.reads_by_index = []
  resumed = data.create_train_iterator(c, seed=2, layout=ONE, start_batch=start)
  first = next(resumed)
  # At most the batch, the prefetched batch and one example per thread, whatever the start.
  assert len(_CountingSource.reads_by_index) <= 4 + 4 + 2
  uninterrupted = data.create_train_iterator(c, seed=2, layout=ONE)
  if start == 1:
    next(uninterrupted)
    _assert_same([first, next(resumed)], _take(uninterrupted, 2))
  else:  # Batch 1000 is positions 4000-4003 of the stream: epoch 41 (of 96 examples), offsets 64-67.
    want = np.random.default_rng([2, 41]).permutation(96)[64:68]
    assert set(want.tolist()) <= set(_CountingSource.reads_by_index)


def test_cached_decoded_frames_give_the_same_batches(synthetic_prepared):
  # 96 train clips at batch 8: 30 batches span two epochs, so the second epoch is served from the cache.
  c = synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=8)
  plain = data.create_train_iterator(c, seed=5, layout=ONE, start_batch=2)
  c.cache_decoded = True
  cached = data.create_train_iterator(c, seed=5, layout=ONE, start_batch=2)
  for _ in range(30):
    _assert_same([next(plain)], [next(cached)])


class TinyImages(_compat.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """Five 40×48 RGB images of known content (pixel value = 3·row + column, per channel offset)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(40, 48, 3)), 'label': tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(), 'test': self._generate_examples()}

  def _generate_examples(self):
    for i in range(5):
      yield i, {'image': tiny_image(i), 'label': i % 3}


def tiny_image(i):
  rows, cols = np.mgrid[0:40, 0:48]
  return np.stack([(3 * rows + cols + 40 * (i + c)) % 256 for c in range(3)], -1).astype(np.uint8)


def test_image_datasets(tmp_path):
  TinyImages(data_dir=str(tmp_path)).download_and_prepare()
  c = small_video_config(name='tiny_images', data_dir=str(tmp_path), eval_split='test', train_short_side_min=40,
                         train_short_side_max=40, crop_size=32, test_short_side=40, random_flip=False)
  batch = next(data.create_train_iterator(c, seed=0, layout=ONE))
  assert batch['image'].shape == (2, 32, 32, 3) and batch['label'].shape == (2,)
  # Scale 1 (40 → 40): each training view is a 32×32 window of its image, unresized.
  for image, label in zip(batch['image'], batch['label']):
    windows = [tiny_image(i)[t:t + 32, l:l + 32] for i in range(5) if i % 3 == label for t in range(9)
               for l in range(17)]
    assert any(np.array_equal(image, w) for w in windows)
  batches = list(data.create_eval_dataset(c, layout=ONE))
  assert len(batches) == 2 and sum(int(b['mask'].sum()) for b in batches) == 5
  assert batches[0]['image'].shape == (4, 32, 32, 3) and 'image_id' in batches[0]
  # Each evaluation view is the centre 32×32 square of one of the images: rows 4..35, columns 8..39 (by hand).
  views = np.concatenate([b['image'][b['mask']] for b in batches])
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  matches = [[i for i in range(5) if np.array_equal(v, tiny_image(i)[4:36, 8:40])] for v in views]
  assert sorted(m[0] for m in matches) == list(range(5))
  assert all(m[0] % 3 == label for m, label in zip(matches, labels))
