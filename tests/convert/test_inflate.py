"""Inflation of a 2D ImageNet ResNet: on a clip of identical frames the video network computes the 2D network.

C2D (every kernel 1×k×k, temporal pools over equal frames) gives the 2D network's res5 map at every frame, hence
its logits. I3D planes are w / t, so away from the temporal zero padding a t-tap sum over equal frames is the
2D response; frames whose receptive field reaches the padding differ. The non-local blocks keep their identity
initialisation and the classifier is new.
"""

import numpy as np
import pytest

from nonlocal_jax import convert
from tests.convert import helpers
from tests.convert.reference import Arch, forward, make_blobs

SIZE = 32


def _inflated(arch, frames):
  blobs = make_blobs(arch, seed=7, two_d=True)
  model = helpers.video_model(arch)
  shape = (2, frames, SIZE, SIZE, 3)
  initial = helpers.initial_for(arch, shape)
  variables = convert.convert_blobs(blobs, initial, inflate=True)
  image = helpers.clips((2, 1, SIZE, SIZE, 3), seed=8)
  clip = np.repeat(image, frames, axis=1)
  logits, state = helpers.logits(model, variables, clip, mutable=['intermediates'])
  res5_2d = forward(blobs, image, arch, image=True, return_res5=True)[:, 0]  # (B, H, W, C)
  return blobs, initial, variables, logits, state['intermediates']['res5_out'][0], res5_2d


def test_c2d_on_identical_frames_is_the_2d_network():
  arch = Arch(stem='8x8')
  blobs, initial, variables, logits, res5, res5_2d = _inflated(arch, frames=4)
  np.testing.assert_array_equal(variables['params']['conv1']['kernel'][0], blobs['conv1_w'].transpose(2, 3, 1, 0))
  # New parts: the classifier and the non-local blocks (identity: zero BN scale) keep their initial values.
  np.testing.assert_array_equal(variables['params']['pred']['kernel'], initial['params']['pred']['kernel'])
  assert not np.any(variables['params']['nonlocal_conv4_0']['bn']['scale'])
  for t in range(res5.shape[1]):
    np.testing.assert_allclose(res5[:, t], res5_2d, rtol=1e-4, atol=1e-4)
  pred = variables['params']['pred']
  expected = res5_2d.mean(axis=(1, 2)) @ pred['kernel'] + pred['bias']
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_i3d_planes_and_interior_frames():
  arch = Arch(stage_sizes=(1, 1, 1, 1), nonlocal_after=((), (0,), (0,), ()), i3d=True, stem='8x8')
  blobs, _, variables, _, res5, res5_2d = _inflated(arch, frames=24)
  conv1 = variables['params']['conv1']['kernel']
  assert conv1.shape[0] == 5
  for plane in conv1:
    np.testing.assert_allclose(plane, blobs['conv1_w'].transpose(2, 3, 1, 0) / 5, rtol=1e-6)
  a = variables['params']['res2_0']['branch2a']['kernel']
  assert a.shape[0] == 3
  np.testing.assert_allclose(a.sum(0), blobs['res2_0_branch2a_w'].transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-7)
  # res5 frame j sees clip frames 2j-4 .. 2j+5 through conv1 (±2), res2 (±1), pool2 (×2), res3, res4 (±1 each):
  # frames 4..7 of 12 never touch the temporal padding.
  assert res5.shape[1] == 12
  for t in range(4, 8):
    np.testing.assert_allclose(res5[:, t], res5_2d, rtol=1e-4, atol=1e-4)
  assert np.abs(res5[:, 0] - res5_2d).max() > 1e-2  # The border frames do see the padding.


def test_inflation_needs_a_backbone_that_fits():
  arch = Arch(stem='8x8')
  blobs = make_blobs(arch, seed=7, two_d=True)
  blobs['res2_0_branch2a_w'] = blobs['res2_0_branch2a_w'][:, :2]
  with pytest.raises(convert.ConversionError, match='res2_0_branch2a_w: checkpoint'):
    convert.convert_blobs(blobs, helpers.initial_for(arch, (2, 4, SIZE, SIZE, 3)), inflate=True)
