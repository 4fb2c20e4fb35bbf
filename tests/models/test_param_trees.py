"""The parameter trees (names, shapes, dtypes) of the preset networks are pinned: converted official checkpoints
and users' saved runs load only while they stay exactly as they are.

The hashes were taken from the code before the block options moved into one spec (``config.model.nonlocal``);
a change here means every saved checkpoint of that network stops loading, so it needs a conversion path, not a
new hash.
"""

import hashlib

import jax
import jax.numpy as jnp
import pytest

from nonlocal_jax.models import build_model
from tests.training.helpers import load_config

# (config, argument, model overrides) -> (number of leaves, sha256 of the sorted 'path shape dtype' lines).
PINNED = {
    ('kinetics_nl', 'arch=c2d,depth=50,blocks=5', ()): (327, '4122c6da278c3fe5'),
    ('kinetics_nl', 'arch=i3d,depth=50,blocks=5', ()): (327, '0725b103f2e70f3b'),
    ('kinetics_nl', 'arch=i3d,depth=101,blocks=5', ()): (582, '1032f8f06b515348'),
    ('kinetics_nl', 'arch=c2d,depth=50,blocks=10,pairwise=concatenation', ()): (397, '5d57ad4a3b0bc89e'),
    ('kinetics_nl', 'arch=c2d,depth=50,blocks=res3,pairwise=gaussian', ()): (275, 'da21988377064002'),
    ('kinetics_nl', 'arch=i3d,depth=101,blocks=5', (('norm', 'affine'),)): (364, '6eb2472765da2954'),
    ('kinetics_c2d', None, ()): (267, '1b2449393a524c9d'),
}
# Rematerialising the blocks changes no parameter: the same fingerprints as remat='none'.
PINNED[('kinetics_nl', 'arch=i3d,depth=50,blocks=5', (('remat', 'all'),))] = PINNED[
    ('kinetics_nl', 'arch=i3d,depth=50,blocks=5', ())]
PINNED[('kinetics_nl', 'arch=c2d,depth=50,blocks=res3,pairwise=gaussian', (('remat', 'nonlocal'),))] = PINNED[
    ('kinetics_nl', 'arch=c2d,depth=50,blocks=res3,pairwise=gaussian', ())]
IMAGE_PINNED = (279, '7610229df01d2815')  # ResNet-50 with a 2D block in res4.


def tree_fingerprint(model, input_shape):
  """(leaves, hash) of the variables ``model.init`` would create, traced abstractly (nothing is allocated)."""
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  lines = sorted(f'{jax.tree_util.keystr(path)} {tuple(leaf.shape)} {leaf.dtype}'
                 for path, leaf in jax.tree_util.tree_leaves_with_path(shapes))
  return len(lines), hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:16]


@pytest.mark.parametrize('name,arg,overrides', list(PINNED))
def test_video_parameter_trees_are_unchanged(name, arg, overrides):
  config = load_config(name, arg)
  for field, value in overrides:
    config.model[field] = value
  d = config.data
  fingerprint = tree_fingerprint(build_model(config.model), (1, d.num_frames, d.crop_size, d.crop_size, 3))
  assert fingerprint == PINNED[(name, arg, overrides)]


@pytest.mark.parametrize('remat', ['none', 'all'])
def test_image_parameter_tree_is_unchanged(remat):
  model = build_model({'name': 'resnet_image', 'depth': 50, 'nonlocal_locations': 'res4', 'remat': remat})
  assert tree_fingerprint(model, (1, 224, 224, 3)) == IMAGE_PINNED
