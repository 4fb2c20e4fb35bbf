"""Clip indices and crop positions: the paper's rules, wrap-around, and the TensorFlow twins."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from nonlocal_jax.data import sampling

small = st.integers(min_value=1, max_value=64)


def test_test_clips_follow_the_papers_layout():
  idx = sampling.test_clip_indices(num_frames=100, clip_length=4, stride=2, num_clips=10)
  assert idx.shape == (10, 4)
  np.testing.assert_array_equal(idx[:, 0], np.arange(0, 100, 10))  # Clip j starts at floor(100 j / 10).
  np.testing.assert_array_equal(idx[9], [90, 92, 94, 96])


def test_test_clips_wrap_on_a_short_video():
  idx = sampling.test_clip_indices(num_frames=5, clip_length=4, stride=2, num_clips=2)
  np.testing.assert_array_equal(idx, [[0, 2, 4, 1], [2, 4, 1, 3]])


def test_train_clip_loops_when_the_video_is_shorter_than_the_window():
  rng = np.random.default_rng(0)
  for _ in range(20):
    np.testing.assert_array_equal(sampling.train_clip_indices(3, 4, 2, rng), [0, 2, 1, 0])


def test_center_clip_is_centred():
  np.testing.assert_array_equal(sampling.center_clip_indices(20, 4, 2), [6, 8, 10, 12])
  np.testing.assert_array_equal(sampling.center_clip_indices(5, 4, 2), [0, 2, 4, 1])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), t=small, stride=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_train_clip_properties(n, t, stride, seed):
  idx = sampling.train_clip_indices(n, t, stride, np.random.default_rng(seed))
  assert idx.shape == (t,)
  assert ((idx >= 0) & (idx < n)).all()
  # Consecutive frames are stride apart modulo the video length, and the window never starts past its last start.
  np.testing.assert_array_equal((idx[1:] - idx[:-1]) % n, np.full(t - 1, stride % n))
  assert idx[0] <= max(n - t * stride, 0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), t=small, stride=st.integers(1, 8), k=st.integers(1, 12))
def test_test_clip_properties(n, t, stride, k):
  idx = sampling.test_clip_indices(n, t, stride, k)
  assert idx.shape == (k, t)
  assert ((idx >= 0) & (idx < n)).all()
  np.testing.assert_array_equal(idx[:, 0], [(n * j) // k for j in range(k)])
  np.testing.assert_array_equal(idx, (idx[:, :1] + stride * np.arange(t)) % n)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 32), stride=st.integers(1, 8), k=st.integers(1, 12))
def test_tf_twins_match_numpy(n, t, stride, k):
  np.testing.assert_array_equal(sampling.tf_test_clip_indices(n, t, stride, k).numpy(),
                                sampling.test_clip_indices(n, t, stride, k))
  np.testing.assert_array_equal(sampling.tf_center_clip_indices(n, t, stride).numpy(),
                                sampling.center_clip_indices(n, t, stride))
  idx = sampling.tf_train_clip_indices(n, t, stride, tf.constant([k, n], tf.int64)).numpy()
  assert idx[0] <= max(n - t * stride, 0)
  np.testing.assert_array_equal(idx, (idx[0] + stride * np.arange(t)) % n)


def test_train_start_covers_every_allowed_window():
  starts = {int(sampling.tf_train_clip_indices(10, 2, 2, tf.constant([0, i], tf.int64))[0]) for i in range(300)}
  assert starts == set(range(0, 7))  # 10 frames, a window of 4: starts 0..6.


def test_three_test_crops_span_the_longer_side():
  np.testing.assert_array_equal(sampling.crop_offsets(256, 340, 256, 3), [[0, 0], [0, 42], [0, 84]])
  np.testing.assert_array_equal(sampling.crop_offsets(340, 256, 256, 3), [[0, 0], [42, 0], [84, 0]])
  np.testing.assert_array_equal(sampling.crop_offsets(256, 340, 224, 1), [[16, 58]])


def test_crop_larger_than_the_frame_is_refused():
  with pytest.raises(ValueError, match='crop_size'):
    sampling.crop_offsets(200, 300, 224, 3)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 400), w=st.integers(8, 400), crops=st.integers(1, 5), data=st.data())
def test_crop_offsets_properties_and_tf_twin(h, w, crops, data):
  size = data.draw(st.integers(1, min(h, w)))
  offsets = sampling.crop_offsets(h, w, size, crops)
  assert ((offsets >= 0).all() and (offsets[:, 0] + size <= h).all() and (offsets[:, 1] + size <= w).all())
  np.testing.assert_array_equal(sampling.tf_crop_offsets(h, w, size, crops).numpy(), offsets)


@pytest.mark.parametrize('h,w,s,expected', [(240, 320, 256, (256, 341)), (320, 240, 256, (341, 256)),
                                            (100, 100, 32, (32, 32))])
def test_scaled_size(h, w, s, expected):
  assert sampling.scaled_size(h, w, s) == expected
  assert tuple(int(v) for v in sampling.tf_scaled_size(h, w, s)) == expected
