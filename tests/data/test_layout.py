"""This process's share: batches that split over all devices, and splits shared between processes without overlap."""

import numpy as np
import pytest

from nonlocal_jax import data
from nonlocal_jax.data import layout as layout_lib
from tests.data.conftest import synthetic_config


def test_processes_share_the_split_without_overlap(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, eval_global_batch_size=9, normalization='none')
  evals = [data.create_eval_dataset(c, layout=layout_lib.ProcessLayout(i, 3, 1)) for i in range(3)]
  assert len({e.num_batches for e in evals}) == 1  # Same step count everywhere: no collective waits forever.
  clips, ids = [], []
  for e in evals:
    for batch in e:
      clips.extend(batch['clips'][batch['mask']].astype(np.uint8))
      ids.extend(batch['video_id'][batch['mask']])
  assert len(ids) == len(set(ids)) == 24
  assert len({clip.tobytes() for clip in clips}) == 24


def test_a_batch_that_does_not_split_over_devices_is_refused(synthetic_prepared):
  c = synthetic_config(synthetic_prepared, global_batch_size=6)
  with pytest.raises(ValueError, match='global_batch_size=6 must be a positive multiple of the 4 devices'):
    data.create_train_iterator(c, seed=0, layout=layout_lib.ProcessLayout(0, 1, 4))
