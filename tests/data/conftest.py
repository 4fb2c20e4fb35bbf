"""Session-wide test data (one tiny Kinetics copy and one small synthetic set, prepared once per worker) and the
small ``config.data`` settings the data tests share."""

import os

import pytest

from tests.data import fixtures

# Settings small enough that a whole split decodes in well under a second.
SYNTHETIC_SETTINGS = dict(num_train=96, num_validation=24, num_test=24)


@pytest.fixture(scope='session')
def kinetics_prepared(tmp_path_factory):
  """A tiny Kinetics-style folder (5 good videos, 1 corrupt, 1 missing) prepared into TFDS with 2 workers."""
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp('kinetics'))
  videos, annotations = fixtures.make_kinetics_folder(root)
  data_dir = os.path.join(root, 'tfds')
  summary = prepare.prepare_kinetics('kinetics400', videos, annotations, data_dir, num_workers=2, keep_cache=True)
  return {'root': root, 'videos': videos, 'annotations': annotations, 'data_dir': data_dir, 'summary': summary}


@pytest.fixture(scope='session')
def synthetic_prepared(tmp_path_factory):
  """A small synthetic_long_range/same_different variant, generated into a temporary TFDS directory."""
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('synthetic'))
  builder = prepare.prepare_synthetic('synthetic_long_range/same_different', data_dir, **SYNTHETIC_SETTINGS)
  return {'data_dir': data_dir, 'builder': builder}


def small_video_config(**overrides):
  """``config.data`` shrunk for tests: 8×2 clips of 56 pixels, tiny batches; overrides by keyword."""
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.data_config()
  c.num_frames, c.frame_stride = 8, 2
  c.train_short_side_min, c.train_short_side_max, c.crop_size = 64, 80, 56
  c.test_short_side, c.test_crop_size = 64, 64
  c.global_batch_size, c.eval_global_batch_size, c.num_workers = 2, 4, 2
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def kinetics_config(prepared, **overrides):
  """``small_video_config`` reading the prepared tiny Kinetics copy."""
  return small_video_config(name='kinetics400', data_dir=prepared['data_dir'], **overrides)


def synthetic_config(prepared, **overrides):
  """``config.data`` reading the prepared synthetic set whole: 8 frames of 32², no rescaling, crop or flip."""
  settings = dict(name='synthetic_long_range/same_different', data_dir=prepared['data_dir'], num_frames=8,
                  frame_stride=1, train_short_side_min=32, train_short_side_max=32, crop_size=32, test_short_side=32,
                  test_crop_size=32, test_num_clips=1, test_num_crops=1, random_flip=False)
  c = small_video_config(**{**settings, **overrides})
  for k, v in SYNTHETIC_SETTINGS.items():
    setattr(c.synthetic, k, v)
  return c
