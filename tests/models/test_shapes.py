"""Stage output shapes: Table 1 of the paper (C2D R50, 32×224×224), the official 8x8 models, images."""

import jax
import jax.numpy as jnp
import pytest

from nonlocal_jax.models import ResNetVideo
from tests.models.helpers import abstract_image, abstract_video, stage_shapes

# Table 1 of the paper: T×H×W after each layer for a 32×224×224 clip, with the stage widths of ResNet-50.
TABLE_1 = {
    'conv1': (16, 112, 112, 64),
    'pool1': (8, 56, 56, 64),
    'res2': (8, 56, 56, 256),
    'pool2': (4, 56, 56, 256),
    'res3': (4, 28, 28, 512),
    'res4': (4, 14, 14, 1024),
    'res5': (4, 7, 7, 2048),
}
# Official 8x8 models: conv1 stride (1,2,2), pool1 (1,3,3)/(1,2,2), pool2 (2,1,1)/(2,1,1) on 8 frames.
EIGHT_BY_EIGHT = {
    'conv1': (8, 112, 112, 64),
    'pool1': (8, 56, 56, 64),
    'res2': (8, 56, 56, 256),
    'pool2': (4, 56, 56, 256),
    'res3': (4, 28, 28, 512),
    'res4': (4, 14, 14, 1024),
    'res5': (4, 7, 7, 2048),
}


@pytest.mark.parametrize('stem', ['table1', '32x2'])
def test_table1_stage_shapes_c2d_r50(stem):
  out, variables = abstract_video((2, 32, 224, 224, 3), depth=50, temporal='c2d', stem=stem)
  shapes = stage_shapes(variables)
  for layer, expected in TABLE_1.items():
    assert shapes[layer] == expected, (stem, layer)
  assert shapes['pool5'] == (2048,)
  assert out.shape == (2, 400)


@pytest.mark.parametrize('temporal', ['c2d', 'i3d_3x1x1', 'i3d_3x3x3'])
def test_8x8_stage_shapes(temporal):
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, temporal=temporal, stem='8x8',
                                nonlocal_locations='5')
  shapes = stage_shapes(variables)
  for layer, expected in EIGHT_BY_EIGHT.items():
    assert shapes[layer] == expected, (temporal, layer)


def test_i3d_32x2_keeps_table1_shapes_with_nonlocal_blocks():
  # Temporal kernels are padded, so inflation and non-local blocks never change the feature-map sizes.
  _, variables = abstract_video((1, 32, 224, 224, 3), depth=101, temporal='i3d_3x1x1', stem='32x2',
                                nonlocal_locations='5')
  shapes = stage_shapes(variables)
  for layer, expected in TABLE_1.items():
    assert shapes[layer] == expected, layer


def test_other_input_sizes_follow_the_strides():
  # 16 frames of 160×200: conv1 8×80×100, pool1 4×40×50, pool2 2, then /2 spatially per stage (ceil).
  _, variables = abstract_video((1, 16, 160, 200, 3), depth=50, stem='32x2')
  shapes = stage_shapes(variables)
  assert shapes['conv1'][:3] == (8, 80, 100)
  assert shapes['pool1'][:3] == (4, 40, 50)
  assert shapes['res3'][:3] == (2, 20, 25)
  assert shapes['res5'][:3] == (2, 5, 7)


def test_fully_convolutional_full_size_at_256x320():
  out, variables = abstract_video((2, 32, 256, 320, 3), depth=50, nonlocal_locations='5')
  assert stage_shapes(variables)['res5'] == (4, 8, 10, 2048)
  # The fully-convolutional output has the classifier's shape; test_forward checks its values.
  model = ResNetVideo(depth=50, nonlocal_locations='5')
  x = jax.ShapeDtypeStruct((2, 32, 256, 320, 3), jnp.float32)
  scores = jax.eval_shape(lambda v, x: model.apply(v, x, fully_convolutional=True),
                          {'params': variables['params'], 'batch_stats': variables['batch_stats']}, x)
  assert scores.shape == (2, 400)


def test_image_stage_shapes():
  out, variables = abstract_image((1, 224, 224, 3), depth=50)
  shapes = stage_shapes(variables)
  assert shapes['conv1'] == (112, 112, 64)
  assert shapes['pool1'] == (56, 56, 64)
  assert shapes['res2'] == (56, 56, 256)
  assert shapes['res5'] == (7, 7, 2048)
  assert out.shape == (1, 1000)
  out, variables = abstract_image((3, 32, 32, 3), depth=20, stem='cifar', num_classes=10)
  shapes = stage_shapes(variables)
  assert shapes['res2'] == (32, 32, 16)
  assert shapes['res3'] == (16, 16, 32)
  assert shapes['res4'] == (8, 8, 64)
  assert 'res5' not in shapes
  assert out.shape == (3, 10)


def test_official_unpadded_stem_pool():
  """stem_pool_padding=0 (official Caffe2): a 3×3/2 pool on 112×112 gives floor((112 - 3) / 2) + 1 = 55."""
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, temporal='c2d', stem='8x8', stem_pool_padding=0)
  shapes = stage_shapes(variables)
  assert shapes['pool1'] == (8, 55, 55, 64)
  assert shapes['res3'] == (4, 28, 28, 512)  # the stride-2 1×1 convs then meet Table 1 again: ceil(55 / 2)
