"""The input normalisation has one home: its constants, their inverse, and the pipeline applying the same map."""

import jax
import numpy as np
import pytest

from nonlocal_jax import data
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import normalization
from tests.data.conftest import small_video_config, synthetic_config


def test_official_constants_and_the_inverse():
  pixels = np.array([0., 114.75, 172.125, 255.], np.float32)
  official = normalization.normalize(pixels, None)
  np.testing.assert_array_equal(official, np.float32([-2., 0., 1., (255 - 114.75) / 57.375]))
  assert official.dtype == np.float32  # The official constants do not widen a float32 input.
  c = small_video_config(normalization='mean_std')
  image = np.random.default_rng(0).uniform(0, 255, (2, 3, 3)).astype(np.float32)
  np.testing.assert_allclose(normalization.normalize(image, c), (image - np.array(c.mean)) / np.array(c.std))
  for config in (None, c, {'normalization': 'official'}):
    np.testing.assert_allclose(normalization.denormalize(normalization.normalize(image, config), config), image,
                               rtol=1e-5)
  none = {'normalization': 'none'}
  assert normalization.normalize(image, none) is image and normalization.denormalize(image, none) is image


@pytest.mark.parametrize('kind', ['official', 'mean_std', 'none'])
def test_the_steps_normalise_the_pipelines_pixels_as_the_module_says(synthetic_prepared, kind):
  one = layout_lib.ProcessLayout(0, 1, 1)
  c = synthetic_config(synthetic_prepared, normalization=kind)
  pixels = next(data.create_train_iterator(c, seed=0, layout=one))['clips']
  # The host delivers the same uint8 pixels whatever the normalisation; the device normalises them.
  raw = next(data.create_train_iterator(synthetic_config(synthetic_prepared, normalization='none'), seed=0,
                                        layout=one))['clips']
  np.testing.assert_array_equal(pixels, raw)
  assert pixels.dtype == np.uint8
  on_device = jax.jit(normalization.on_device(c))
  got = np.asarray(on_device(pixels))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, normalization.normalize(pixels.astype(np.float64), c), rtol=1e-6, atol=1e-5)
  already = np.ones((2, 3), np.float32)  # Float inputs (fake data) pass unchanged.
  np.testing.assert_array_equal(np.asarray(on_device(already)), already)
