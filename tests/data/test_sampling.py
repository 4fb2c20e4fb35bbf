"""Clip indices, crop positions and view windows: the paper's rules, wrap-around, the scale jitter's windows."""

import numpy as np
import pytest
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


def test_train_start_covers_every_allowed_window():
  starts = {int(sampling.train_clip_indices(10, 2, 2, np.random.default_rng(i))[0]) for i in range(300)}
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
def test_crop_offsets_properties(h, w, crops, data):
  size = data.draw(st.integers(1, min(h, w)))
  offsets = sampling.crop_offsets(h, w, size, crops)
  assert ((offsets >= 0).all() and (offsets[:, 0] + size <= h).all() and (offsets[:, 1] + size <= w).all())


@pytest.mark.parametrize('h,w,s,expected', [(240, 320, 256, (256, 341)), (320, 240, 256, (341, 256)),
                                            (100, 100, 32, (32, 32))])
def test_scaled_size(h, w, s, expected):
  assert sampling.scaled_size(h, w, s) == expected


def test_window_side_is_the_crop_seen_at_the_stored_scale():
  # A 224 crop of a 256-short frame scaled to 320 covers 224·256/320 = 179.2 stored pixels; at 256 exactly 224.
  assert sampling.window_side(256, 454, 224, 320) == 179
  assert sampling.window_side(256, 454, 224, 256) == 224
  assert sampling.window_side(454, 256, 224, 288) == round(224 * 256 / 288)
  assert sampling.window_side(100, 120, 224, 64) == 100  # Never larger than the frame.


class _Data:
  """The config.data fields train_window reads."""
  train_short_side_min, train_short_side_max, crop_size, random_flip = 256, 320, 224, True


def test_train_windows_follow_the_scale_jitter_and_fit_the_frame():
  sides, flips, tops, lefts = set(), [], [], []
  for seed in range(400):
    (top, left, h, w), flip = sampling.train_window(256, 454, _Data, np.random.default_rng(seed))
    assert h == w and 0 <= top <= 256 - h and 0 <= left <= 454 - w
    sides.add(h)
    flips.append(flip)
    tops.append(top / max(256 - h, 1))
    lefts.append(left / (454 - w))
  # Every short side in [256, 320] gives round(224·256/s): from 224 down to 179.
  assert sides == {round(224 * 256 / s) for s in range(256, 321)}
  assert 0.4 < np.mean(flips) < 0.6 and 0.4 < np.mean(lefts) < 0.6  # Uniform flip and place.


def test_test_windows_are_the_papers_three_crops_in_stored_pixels():
  # Frames stored at 256 and tested at 256: three 256 squares at the start, centre and end of the long side.
  np.testing.assert_array_equal(sampling.test_windows(256, 340, 256, 256, 3),
                                [[0, 0, 256, 256], [0, 42, 256, 256], [0, 84, 256, 256]])
  # Stored at 512 and tested at 256: each crop is twice as large in stored pixels.
  np.testing.assert_array_equal(sampling.test_windows(512, 680, 256, 256, 1), [[0, 84, 512, 512]])
