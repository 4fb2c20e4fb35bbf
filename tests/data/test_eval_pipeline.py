"""The evaluation views: the frames the test protocol names, validation mode, a dataset on a remote file system."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nonlocal_jax import data
from nonlocal_jax.data import builders
from nonlocal_jax.data import examples
from nonlocal_jax.data import layout as layout_lib
from tests import remote
from tests.data import fixtures
from tests.data.conftest import kinetics_config, synthetic_config

ONE = layout_lib.ProcessLayout(0, 1, 1)


def test_test_views_hold_the_frames_the_protocol_names(kinetics_prepared):
  c = kinetics_config(kinetics_prepared, normalization='none', test_num_clips=3, test_num_crops=3,
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


def test_test_batches_are_the_same_whatever_the_threads_and_padding_is_zeros(kinetics_prepared):
  def batches(workers):
    c = kinetics_config(kinetics_prepared, test_num_clips=3, test_num_crops=3, num_frames=4, frame_stride=3,
                        eval_global_batch_size=4, num_workers=workers)
    return list(data.create_eval_dataset(c, layout=ONE))
  one, three = batches(1), batches(3)
  assert len(one) == len(three) == 5  # 2 videos × 9 views in batches of 4: 18 views and 2 rows of padding.
  for a, b in zip(one, three):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  last = one[-1]
  assert last['mask'].tolist() == [True, True, False, False]
  assert not last['clips'][2:].any() and not last['view_index'][2:].any() and not last['video_id'][2:].any()


@pytest.mark.parametrize('positions', [[0, 2, 4, 6], [1, 2, 3], [5], [4, 6, 0, 2], [0, 1, 3]])
def test_a_clips_frames_are_the_regions_frames_without_a_copy_when_evenly_spaced(positions):
  region = np.arange(8 * 2 * 3 * 3, dtype=np.uint8).reshape(8, 2, 3, 3)
  positions = np.asarray(positions)
  frames = examples._frames_of(region, positions)  # pylint: disable=protected-access
  np.testing.assert_array_equal(frames, region[positions])
  steps = np.diff(positions)
  assert np.shares_memory(frames, region) == (len(positions) > 1 and len(set(steps)) == 1 and steps[0] > 0)


def test_validation_mode_is_one_centre_view_per_video(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, eval_global_batch_size=5)
  evaluation = data.create_eval_dataset(c, mode='val', layout=ONE)
  batches = list(evaluation)
  assert evaluation.views_per_example == 1 and len(batches) == 5
  assert sum(int(b['mask'].sum()) for b in batches) == 24


def test_a_dataset_on_a_remote_file_system_reads_as_its_local_copy(synthetic_prepared, remote_dir):
  remote.copy_tree(synthetic_prepared['data_dir'], remote_dir)
  local_config = synthetic_config(synthetic_prepared)
  remote_config = synthetic_config({'data_dir': remote_dir})
  builder = builders.check_prepared(remote_config.name, remote_dir, ['train', 'test'], remote_config.synthetic)
  assert os.fspath(builder.data_dir).startswith(remote_dir + '/')
  for make in (lambda c: data.create_train_iterator(c, seed=0, layout=ONE),
               lambda c: iter(data.create_eval_dataset(c, layout=ONE))):
    local, there = next(make(local_config)), next(make(remote_config))
    assert sorted(local) == sorted(there)
    for key in local:
      np.testing.assert_array_equal(local[key], there[key], err_msg=key)
