"""The evaluation views: the frames the test protocol names, validation mode, a dataset on a remote file system."""

import os

import numpy as np
import tensorflow_datasets as tfds

from nonlocal_jax import data
from nonlocal_jax.data import builders
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
