"""The tf.data pipeline: shapes, views and their ids, padding, determinism, sharding, clear errors, remote data."""

import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nonlocal_jax import data
from nonlocal_jax.data import pipeline
from tests import remote
from tests.data import fixtures
from tests.data.conftest import SYNTHETIC_SETTINGS, small_video_config

ONE = pipeline.ProcessLayout(0, 1, 1)


def _kinetics_config(prepared, **overrides):
  return small_video_config(name='kinetics400', data_dir=prepared['data_dir'], **overrides)


def _synthetic_config(prepared, **overrides):
  settings = dict(name='synthetic_long_range/same_different', data_dir=prepared['data_dir'], num_frames=8,
                  frame_stride=1, train_short_side_min=32, train_short_side_max=32, crop_size=32, test_short_side=32,
                  test_crop_size=32, test_num_clips=1, test_num_crops=1, random_flip=False)
  c = small_video_config(**{**settings, **overrides})
  for k, v in SYNTHETIC_SETTINGS.items():
    setattr(c.synthetic, k, v)
  return c


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


def test_test_views_hold_the_frames_the_protocol_names(kinetics_prepared):
  c = _kinetics_config(kinetics_prepared, normalization='none', test_num_clips=3, test_num_crops=3,
                       num_frames=4, frame_stride=3)
  evaluation = data.create_eval_dataset(c, layout=ONE)
  frame_counts = {fixtures.kinetics_id(y): n for y, _, s, n, fps, _ in fixtures.GOOD_VIDEOS if s == 'validation'}
  builder = tfds.builder('kinetics/400', data_dir=kinetics_prepared['data_dir'], try_gcs=False)
  order = [ex['video_id'].decode() for ex in tfds.as_numpy(builder.as_dataset(split='validation'))]
  seen = 0
  for batch in evaluation:
    for clip, vid, view, keep in zip(batch['clips'], batch['video_id'], batch['view_index'], batch['mask']):
      if not keep:
        continue
      seen += 1
      n = frame_counts[order[vid]]
      want = data.test_clip_indices(n, 4, 3, 3)[view // 3]
      palette = np.stack([fixtures.frame_color(i) for i in range(n)]).astype(np.float32)
      colours = clip[:, 32, 32, :]
      got = np.argmin(np.abs(colours[:, None, :] - palette[None]).sum(-1), axis=1)
      np.testing.assert_array_equal(got, want)
  assert seen == 2 * 9


def test_training_is_deterministic_for_a_seed(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=4)
  first = [next(it) for it in [data.create_train_iterator(c, seed=3, layout=ONE)] for _ in range(3)]
  again = [next(it) for it in [data.create_train_iterator(c, seed=3, layout=ONE)] for _ in range(3)]
  other = next(data.create_train_iterator(c, seed=4, layout=ONE))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['clips'], b['clips'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert not np.array_equal(first[0]['clips'], other['clips'])


def test_cached_decoded_frames_give_the_same_batches(synthetic_prepared):
  # 96 train clips at batch 8: 30 batches span two epochs, so the second epoch is served from the cache.
  c = _synthetic_config(synthetic_prepared, random_flip=True, global_batch_size=8)
  plain = data.create_train_iterator(c, seed=5, layout=ONE, start_batch=2)
  c.cache_decoded = True
  cached = data.create_train_iterator(c, seed=5, layout=ONE, start_batch=2)
  for _ in range(30):
    a, b = next(plain), next(cached)
    np.testing.assert_array_equal(a['clips'], b['clips'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_an_epoch_reads_every_example_once(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, global_batch_size=8, normalization='none')
  it = data.create_train_iterator(c, seed=0, layout=ONE)
  clips = np.concatenate([next(it)['clips'] for _ in range(96 // 8)])
  # No augmentation changes pixels here (fixed scale, full crop, no flip): clips are the stored videos.
  keys = {clip.tobytes() for clip in clips.astype(np.uint8)}
  assert len(keys) == 96


def test_processes_share_the_split_without_overlap(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, eval_global_batch_size=9, normalization='none')
  evals = [data.create_eval_dataset(c, layout=pipeline.ProcessLayout(i, 3, 1)) for i in range(3)]
  assert len({e.num_batches for e in evals}) == 1  # Same step count everywhere: no collective waits forever.
  clips, ids = [], []
  for e in evals:
    for batch in e:
      clips.extend(batch['clips'][batch['mask']].astype(np.uint8))
      ids.extend(batch['video_id'][batch['mask']])
  assert len(ids) == len(set(ids)) == 24
  assert len({clip.tobytes() for clip in clips}) == 24


def test_validation_mode_is_one_centre_view_per_video(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, eval_global_batch_size=5)
  evaluation = data.create_eval_dataset(c, mode='val', layout=ONE)
  batches = list(evaluation)
  assert evaluation.views_per_example == 1 and len(batches) == 5
  assert sum(int(b['mask'].sum()) for b in batches) == 24


def test_device_batch_layout(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, global_batch_size=8, batch_layout='devices')
  batch = next(data.create_train_iterator(c, seed=0, layout=pipeline.ProcessLayout(0, 1, 4)))
  assert batch['clips'].shape == (4, 2, 8, 32, 32, 3) and batch['label'].shape == (4, 2)


def test_a_batch_that_does_not_split_over_devices_is_refused(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, global_batch_size=6)
  with pytest.raises(ValueError, match='global_batch_size=6 must be a positive multiple of the 4 devices'):
    data.create_train_iterator(c, seed=0, layout=pipeline.ProcessLayout(0, 1, 4))


def test_an_unprepared_dataset_fails_at_start_with_the_command(tmp_path, monkeypatch):
  def no_download(*args, **kwargs):
    raise AssertionError('the pipeline must never prepare or download a dataset')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  for name, command in (('kinetics400', 'python -m nonlocal_jax.data.prepare kinetics400 --videos=DIR'),
                        ('synthetic_long_range/sum_mod10', 'prepare synthetic_long_range/sum_mod10'),
                        ('cifar10', 'prepare cifar10')):
    c = small_video_config(name=name, data_dir=str(tmp_path))
    with pytest.raises(data.DatasetNotPreparedError, match=command):
      data.create_train_iterator(c, seed=0, layout=ONE)


def test_a_dataset_on_a_remote_file_system_reads_as_its_local_copy(synthetic_prepared, remote_dir):
  remote.copy_tree(synthetic_prepared['data_dir'], remote_dir)
  local_config = _synthetic_config(synthetic_prepared)
  remote_config = _synthetic_config({'data_dir': remote_dir})
  builder = pipeline.check_prepared(remote_config.name, remote_dir, ['train', 'test'], remote_config.synthetic)
  assert os.fspath(builder.data_dir).startswith(remote_dir + '/')
  for make in (lambda c: data.create_train_iterator(c, seed=0, layout=ONE),
               lambda c: iter(data.create_eval_dataset(c, layout=ONE))):
    local, there = next(make(local_config)), next(make(remote_config))
    assert sorted(local) == sorted(there)
    for key in local:
      np.testing.assert_array_equal(local[key], there[key], err_msg=key)


def test_a_remote_data_dir_missing_or_unprepared_names_the_command(remote_dir):
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  name = 'synthetic_long_range/same_different'
  missing = f'{remote_dir}/missing'
  with pytest.raises(data.DatasetNotPreparedError, match=re.escape(
      f'The data directory {missing} does not exist: prepare the dataset there with '
      f'`python -m nonlocal_jax.data.prepare {name} --data_dir={missing}` or set config.data.data_dir')):
    pipeline.check_prepared(name, missing)
  with pytest.raises(data.DatasetNotPreparedError, match=re.escape(
      f"Dataset '{name}' is not prepared in {remote_dir}: run `python -m nonlocal_jax.data.prepare {name} "
      f'--data_dir={remote_dir}` first.')):
    pipeline.check_prepared(name, remote_dir)
  # Kinetics is decoded on a local disk (videos, resumable cache), so the command prepares it there and copies it.
  with pytest.raises(data.DatasetNotPreparedError, match=re.escape(
      '`python -m nonlocal_jax.data.prepare kinetics400 --videos=DIR --annotations=DIR --data_dir=LOCAL_DIR && '
      f'gsutil -m rsync -r LOCAL_DIR {remote_dir}` first.')):
    pipeline.check_prepared('kinetics400', remote_dir)
  with pytest.raises(ValueError, match=r'Kinetics is prepared on a local disk, not in gs://b/tfds: pass a local '
                                       r'--data_dir, then copy it with `gsutil -m rsync -r LOCAL_DIR gs://b/tfds`\.'):
    prepare.prepare_kinetics('kinetics400', 'videos', 'annotations', 'gs://b/tfds')


def test_image_datasets(monkeypatch):
  c = small_video_config(name='cifar10', eval_split='test', train_short_side_min=32, train_short_side_max=40,
                         crop_size=32, test_short_side=32, normalization='mean_std')
  with tfds.testing.mock_data(num_examples=5):
    batch = next(data.create_train_iterator(c, seed=0, layout=ONE))
    assert batch['image'].shape == (2, 32, 32, 3) and batch['label'].shape == (2,)
    batches = list(data.create_eval_dataset(c, layout=ONE))
  assert len(batches) == 2 and sum(int(b['mask'].sum()) for b in batches) == 5
  assert batches[0]['image'].shape == (4, 32, 32, 3) and 'image_id' in batches[0]


def test_aggregate_views_averages_per_video_and_ignores_padding():
  scores = np.array([[1., 0.], [0., 1.], [1., 1.], [9., 9.]])
  ids, mean = data.aggregate_views(scores, np.array([7, 7, 3, 0]), np.array([1, 1, 1, 0], bool))
  np.testing.assert_array_equal(ids, [3, 7])
  np.testing.assert_allclose(mean, [[1., 1.], [.5, .5]])


def test_bad_config_values_name_the_field(synthetic_prepared):
  c = _synthetic_config(synthetic_prepared, crop_size=40)
  with pytest.raises(ValueError, match='config.data.crop_size'):
    data.create_train_iterator(c, seed=0, layout=ONE)
