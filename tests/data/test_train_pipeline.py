"""The training stream: shapes, determinism, the decoded-frame cache, whole epochs, images (and mocked UCF101)."""

import numpy as np
import tensorflow_datasets as tfds

from nonlocal_jax import data
from nonlocal_jax.data import layout as layout_lib
from tests.data.conftest import small_video_config, synthetic_config

ONE = layout_lib.ProcessLayout(0, 1, 1)


def test_ucf101_through_the_pipeline_with_mock_data():
  c = small_video_config(name='ucf101', eval_split='test', test_num_clips=2, test_num_crops=3)
  with tfds.testing.mock_data(num_examples=3):
    batch = next(data.create_train_iterator(c, seed=0, layout=ONE))
    assert batch['clips'].shape == (2, 8, 56, 56, 3) and batch['clips'].dtype == np.float32
    assert ((batch['label'] >= 0) & (batch['label'] < 101)).all()
    assert np.abs(batch['clips']).max() <= 255 / 57.375  # Official normalisation of 0-255 pixels.
    evaluation = data.create_eval_dataset(c, layout=ONE)
    batches = list(evaluation)
  # 3 videos × 2 clips × 3 crops = 18 views in batches of 4: 5 batches, the last padded with 2 masked views.
  assert len(batches) == evaluation.num_batches == 5
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 18 and not mask[18:].any()
  ids = np.concatenate([b['video_id'] for b in batches])[:18]
  views = np.concatenate([b['view_index'] for b in batches])[:18]
  np.testing.assert_array_equal(ids, np.repeat([0, 1, 2], 6))
  np.testing.assert_array_equal(views, np.tile(np.arange(6), 3))
  assert batches[0]['clips'].shape == (4, 8, 64, 64, 3)


def test_training_is_deterministic_for_a_seed(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=4)
  first = [next(it) for it in [data.create_train_iterator(c, seed=3, layout=ONE)] for _ in range(3)]
  again = [next(it) for it in [data.create_train_iterator(c, seed=3, layout=ONE)] for _ in range(3)]
  other = next(data.create_train_iterator(c, seed=4, layout=ONE))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['clips'], b['clips'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert not np.array_equal(first[0]['clips'], other['clips'])


def test_cached_decoded_frames_give_the_same_batches(synthetic_prepared):
  # 96 train clips at batch 8: 30 batches span two epochs, so the second epoch is served from the cache.
  c = synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=8)
  plain = data.create_train_iterator(c, seed=5, layout=ONE, start_batch=2)
  c.cache_decoded = True
  cached = data.create_train_iterator(c, seed=5, layout=ONE, start_batch=2)
  for _ in range(30):
    a, b = next(plain), next(cached)
    np.testing.assert_array_equal(a['clips'], b['clips'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_an_epoch_reads_every_example_once(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, global_batch_size=8, normalization='none')
  it = data.create_train_iterator(c, seed=0, layout=ONE)
  clips = np.concatenate([next(it)['clips'] for _ in range(96 // 8)])
  # No augmentation changes pixels here (fixed scale, full crop, no flip): clips are the stored videos.
  keys = {clip.tobytes() for clip in clips.astype(np.uint8)}
  assert len(keys) == 96


def test_image_datasets(monkeypatch):
  c = small_video_config(name='cifar10', eval_split='test', train_short_side_min=32, train_short_side_max=40,
                         crop_size=32, test_short_side=32, normalization='mean_std')
  with tfds.testing.mock_data(num_examples=5):
    batch = next(data.create_train_iterator(c, seed=0, layout=ONE))
    assert batch['image'].shape == (2, 32, 32, 3) and batch['label'].shape == (2,)
    batches = list(data.create_eval_dataset(c, layout=ONE))
  assert len(batches) == 2 and sum(int(b['mask'].sum()) for b in batches) == 5
  assert batches[0]['image'].shape == (4, 32, 32, 3) and 'image_id' in batches[0]
