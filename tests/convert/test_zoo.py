"""Full-size official names and shapes (R50, 400 classes) fit the configs that the README's zoo commands use.

Only shapes are traced (jax.eval_shape); the blobs are random with the official layout.
"""

import jax
import jax.numpy as jnp
import pytest

from nonlocal_jax import convert
from nonlocal_jax.models import build_model
from tests.convert import helpers
from tests.convert.reference import Arch, make_blobs

R50 = dict(stage_sizes=(3, 4, 6, 3), width=64, num_classes=400)
NL5 = ((), (1, 3), (1, 3, 5), ())
CASES = {
    'c2d_baseline_8x8': ('kinetics_c2d', 'frames=8x8', {}, Arch(**R50, nonlocal_after=((),) * 4)),
    'i3d_nonlocal_32x2': ('kinetics_nl', 'arch=i3d', {}, Arch(**R50, nonlocal_after=NL5, i3d=True)),
    'i3d_nonlocal_128x1_frozen': ('kinetics_nl', 'arch=i3d', {'model.norm': 'affine',
                                                             'model.nonlocal_res3_temporal_groups': 4,
                                                             'data.num_frames': 128, 'data.frame_stride': 1},
                                  Arch(**R50, nonlocal_after=NL5, i3d=True, affine=True)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_official_shapes_fit_the_config(case):
  name, arg, overrides, arch = CASES[case]
  config = helpers.load_config(name, arg, **overrides)
  model = build_model(config.model)
  shape = (1, config.data.num_frames, 224, 224, 3)
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), jnp.zeros(shape, jnp.float32))
  blobs = make_blobs(arch)
  variables = convert.convert_blobs(blobs, abstract)
  assert variables['params']['pred']['kernel'].shape == (2048, 400)
  assert ('batch_stats' in variables) == (not arch.affine)
