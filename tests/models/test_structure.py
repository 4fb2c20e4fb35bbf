"""I3D inflation pattern and kernel shapes, non-local placement presets, and the Caffe2 naming."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from nonlocal_jax.models import ResNetVideo, caffe2_name, caffe2_names, resolve_nonlocal_locations
from tests.models.helpers import abstract_video

# docs/paper.md §3, official use_temp_convs: which residual blocks of I3D get a temporal kernel.
R50_PATTERN = {2: [1, 1, 1], 3: [1, 0, 1, 0], 4: [1, 0, 1, 0, 1, 0], 5: [0, 1, 0]}
R101_PATTERN = {2: [1, 1, 1], 3: [1, 0, 1, 0], 4: [1, 0] * 11 + [1], 5: [0, 1, 0]}


def kernel_shapes(params, stage, block):
  return {name: params[f'res{stage}_{block}'][name]['kernel'].shape[:3] for name in ('branch2a', 'branch2b')}


@pytest.mark.parametrize('depth,pattern', [(50, R50_PATTERN), (101, R101_PATTERN)])
def test_i3d_3x1x1_inflation_pattern(depth, pattern):
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=depth, temporal='i3d_3x1x1', stem='8x8')
  params = variables['params']
  assert params['conv1']['kernel'].shape == (5, 7, 7, 3, 64)
  for stage, flags in pattern.items():
    for block, flag in enumerate(flags):
      shapes = kernel_shapes(params, stage, block)
      assert shapes['branch2a'] == ((3, 1, 1) if flag else (1, 1, 1)), (stage, block)
      assert shapes['branch2b'] == (1, 3, 3), (stage, block)
    assert f'res{stage}_{len(flags)}' not in params


def test_i3d_3x3x3_inflates_the_3x3():
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, temporal='i3d_3x3x3', stem='8x8')
  params = variables['params']
  assert params['conv1']['kernel'].shape == (5, 7, 7, 3, 64)
  for stage, flags in R50_PATTERN.items():
    for block, flag in enumerate(flags):
      shapes = kernel_shapes(params, stage, block)
      assert shapes['branch2a'] == (1, 1, 1)
      assert shapes['branch2b'] == ((3, 3, 3) if flag else (1, 3, 3)), (stage, block)


def test_c2d_has_no_temporal_kernels_and_full_channel_shapes():
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, temporal='c2d', stem='8x8')
  params = variables['params']
  assert params['conv1']['kernel'].shape == (1, 7, 7, 3, 64)
  assert params['res2_0']['branch2a']['kernel'].shape == (1, 1, 1, 64, 64)
  assert params['res2_0']['branch2c']['kernel'].shape == (1, 1, 1, 64, 256)
  assert params['res2_0']['branch1']['kernel'].shape == (1, 1, 1, 64, 256)
  assert 'branch1' not in params['res2_1']
  assert params['res3_0']['branch2b']['kernel'].shape == (1, 3, 3, 128, 128)
  assert params['res5_2']['branch2c']['kernel'].shape == (1, 1, 1, 512, 2048)
  assert params['pred']['kernel'].shape == (2048, 400)


# docs/paper.md §3 "Where the non-local blocks go", 0-indexed residual blocks per stage res2..res5.
PRESETS = {
    (50, 'none'): ((), (), (), ()),
    (50, '1'): ((), (), (4,), ()),
    (101, '1'): ((), (), (21,), ()),
    (50, '5'): ((), (1, 3), (1, 3, 5), ()),
    (101, '5'): ((), (1, 3), (6, 13, 20), ()),
    (50, '10'): ((), (0, 1, 2, 3), (0, 1, 2, 3, 4, 5), ()),
    (50, 'res2'): ((1,), (), (), ()),
    (50, 'res3'): ((), (2,), (), ()),
    (50, 'res4'): ((), (), (4,), ()),
    (50, 'res5'): ((), (), (), (1,)),
    (101, 'res2'): ((1,), (), (), ()),
    (101, 'res3'): ((), (2,), (), ()),
    (101, 'res4'): ((), (), (21,), ()),
    (101, 'res5'): ((), (), (), (1,)),
}
STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


@pytest.mark.parametrize('depth,preset', sorted(PRESETS))
def test_presets_place_blocks_where_the_paper_says(depth, preset):
  assert resolve_nonlocal_locations(preset, STAGES[depth]) == PRESETS[depth, preset]


def top_level_call_order(model, input_shape):
  """Names of the top-level submodules in the order the forward pass calls them (abstract trace)."""
  order = []

  def interceptor(next_fun, args, kwargs, context):
    path = context.module.path
    if context.method_name == '__call__' and len(path) == 1:
      order.append(path[0])
    return next_fun(*args, **kwargs)

  def init(x):
    with nn.intercept_methods(interceptor):
      return model.init(jax.random.key(0), x)

  jax.eval_shape(init, jax.ShapeDtypeStruct(input_shape, jnp.float32))
  return order


@pytest.mark.parametrize('depth,preset', [(50, '5'), (101, '5'), (50, '10'), (101, '1'), (50, 'res2'),
                                          (50, 'res5')])
def test_nonlocal_blocks_follow_the_named_residual_blocks(depth, preset):
  order = top_level_call_order(ResNetVideo(depth=depth, width=8, nonlocal_locations=preset, stem='8x8'),
                               (1, 8, 64, 64, 3))
  expected = []
  for k, (n, after) in enumerate(zip(STAGES[depth], PRESETS[depth, preset])):
    for i in range(n):
      expected.append(f'res{k + 2}_{i}')
      if i in after:
        expected.append(f'nonlocal_conv{k + 2}_{i}')
  assert [name for name in order if name.startswith(('res2', 'res3', 'res4', 'res5', 'nonlocal'))] == expected


def test_explicit_placements():
  sizes = STAGES[50]
  expected = ((), (1, 3), (1, 3, 5), ())
  assert resolve_nonlocal_locations('res3:1,3;res4:1,3,5', sizes) == expected
  assert resolve_nonlocal_locations({'res3': [3, 1], 'res4': (1, 3, 5)}, sizes) == expected
  assert resolve_nonlocal_locations([[], [1, 3], [5, 3, 1], []], sizes) == expected
  assert resolve_nonlocal_locations(None, sizes) == ((), (), (), ())


OFFICIAL_NAME = re.compile(
    r'conv1_w|res_conv1_bn_(s|b|rm|riv)|res[2-5]_\d+_branch(2[abc]|1)_(w|bn_(s|b|rm|riv))'
    r'|nonlocal_conv[34]_\d+_((theta|phi|g|out)_[wb]|bn_(s|b|rm|riv))|pred_[wb]')


def test_parameter_names_map_one_to_one_onto_the_official_blobs():
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, temporal='i3d_3x1x1', nonlocal_locations='5',
                                stem='8x8')
  names = caffe2_names(variables)
  n_vars = len(jax.tree.leaves(variables['params'])) + len(jax.tree.leaves(variables['batch_stats']))
  assert len(names) == n_vars  # one-to-one
  for name in names:
    assert OFFICIAL_NAME.fullmatch(name), name
  # docs/paper.md §6 examples.
  for blob in ('conv1_w', 'res_conv1_bn_riv', 'res4_0_branch1_w', 'res3_1_branch2b_bn_rm',
               'nonlocal_conv3_1_theta_w', 'nonlocal_conv4_5_out_b', 'nonlocal_conv4_3_bn_s', 'pred_w', 'pred_b'):
    assert blob in names, blob
  assert names['nonlocal_conv4_3_bn_rm'] == ('batch_stats', 'nonlocal_conv4_3', 'bn', 'mean')
  assert {n.rsplit('_', 2)[0] for n in names if n.startswith('nonlocal')} == {
      'nonlocal_conv3_1', 'nonlocal_conv3_3', 'nonlocal_conv4_1', 'nonlocal_conv4_3', 'nonlocal_conv4_5'}
  assert caffe2_name(('res2_0', 'branch2a', 'kernel')) == 'res2_0_branch2a_w'
  with pytest.raises(ValueError, match='no Caffe2 counterpart'):
    caffe2_name(('res2_0', 'branch2a', 'weird'))


def test_frozen_affine_models_have_no_batch_stats():
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, norm='affine', nonlocal_locations='5', stem='8x8')
  assert 'batch_stats' not in variables
  assert set(variables['params']['res_conv1_bn']) == {'scale', 'bias'}
  assert set(variables['params']['nonlocal_conv3_1']['bn']) == {'scale', 'bias'}
