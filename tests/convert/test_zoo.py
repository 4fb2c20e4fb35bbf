"""Every model of nonlocal_jax.zoo: its config takes the official names and shapes (R50, 400 classes), and samples
the clips its name says.

Only shapes are traced (jax.eval_shape); the blobs are random with the official layout.
"""

import re

import jax
import jax.numpy as jnp
import pytest

from nonlocal_jax import convert
from nonlocal_jax import zoo
from nonlocal_jax.models import build_model
from tests.convert.reference import Arch, make_blobs

R50 = dict(stage_sizes=(3, 4, 6, 3), width=64, num_classes=400)
NL5 = ((), (1, 3), (1, 3, 5), ())


@pytest.mark.parametrize('name', sorted(zoo.MODELS))
def test_official_shapes_fit_the_config(name):
  model = zoo.MODELS[name]
  assert model.file.startswith(name) and model.source.endswith('/' + model.file)
  config = zoo.config_of(model)
  # What the name says, independently of the table's config: the clip sampling, the frozen BN of the 128-frame
  # models; and the Caffe2 stem pool (unpadded) of every official model.
  frames, stride = map(int, re.search(r'_(\d+)x(\d+)$', name).groups())
  assert (config.data.num_frames, config.data.frame_stride) == (frames, stride)
  assert config.model.stem_pool_padding == 0
  arch = Arch(**R50, nonlocal_after=NL5 if '_nonlocal_' in name else ((),) * 4, i3d=name.startswith('i3d'),
              affine=frames == 128)
  network = build_model(config.model)
  shape = (1, config.data.num_frames, 224, 224, 3)
  abstract = jax.eval_shape(lambda x: network.init(jax.random.key(0), x, train=False), jnp.zeros(shape, jnp.float32))
  variables = convert.convert_blobs(make_blobs(arch), abstract)
  assert variables['params']['pred']['kernel'].shape == (2048, 400)
  assert ('batch_stats' in variables) == (not arch.affine)
