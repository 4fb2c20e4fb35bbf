"""Converted official checkpoints compute the official network: Flax logits vs the NumPy reference (≤ 1e-4)."""

import numpy as np
import pytest

from tests.convert import helpers
from tests.convert.reference import Arch, forward, make_blobs

CASES = {
    'c2d_nl_8x8': (Arch(stem='8x8'), (2, 4, 32, 32, 3)),
    'c2d_nl_32x2': (Arch(stem='32x2'), (2, 8, 32, 32, 3)),
    'i3d_nl_8x8': (Arch(stem='8x8', i3d=True), (2, 4, 32, 32, 3)),
    'i3d_nl_32x2': (Arch(stem='32x2', i3d=True), (2, 16, 32, 32, 3)),
    # The official Caffe2 stem pool has no padding: 34 -> conv1 17 -> pool1 8 (9 with padding 1).
    'c2d_nl_8x8_caffe2_stem': (Arch(stem='8x8', stem_pool_padding=0), (1, 4, 34, 34, 3)),
    # The frozen-BN 128-frame form: affine norms and grouped non-local in res3 (groups of 2 of res3's 4 frames).
    'i3d_nl_frozen_grouped': (Arch(stem='8x8', i3d=True, affine=True, res3_groups=2), (1, 8, 32, 32, 3)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_logits_match_reference(case):
  arch, shape = CASES[case]
  blobs = make_blobs(arch, seed=3)
  model, variables = helpers.converted(arch, blobs, shape)
  x = helpers.clips(shape, seed=4)
  expected = forward(blobs, x, arch)
  got = helpers.logits(model, variables, x)
  assert np.abs(expected).max() > 0.1  # A network that outputs ~0 would match anything.
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_frozen_bn_folds_running_statistics():
  """A BN-trained checkpoint (with rm/riv) loaded into a frozen-BN model computes BatchNorm inference."""
  bn_arch = Arch(stem='8x8', affine=False)
  blobs = make_blobs(bn_arch, seed=5)
  affine_arch = Arch(stem='8x8', affine=True)
  shape = (1, 4, 32, 32, 3)
  model, variables = helpers.converted(affine_arch, blobs, shape)
  assert 'batch_stats' not in variables
  x = helpers.clips(shape, seed=6)
  np.testing.assert_allclose(helpers.logits(model, variables, x), forward(blobs, x, bn_arch), rtol=0, atol=1e-4)
