"""build_model from configs, the config variants, the summary command, and the error messages."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from nonlocal_jax.layers import NonLocalBlock
from nonlocal_jax.models import ResNetImage, ResNetVideo, build_model, resolve_nonlocal_locations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None or name != 'default' else module.get_config()


def test_default_config_builds_the_c2d_r50():
  model = build_model(load_config('default').model)
  assert isinstance(model, ResNetVideo)
  assert (model.depth, model.temporal, model.nonlocal_locations, model.num_classes) == (50, 'c2d', 'none', 400)
  assert model.dtype == jnp.float32


def test_config_block_spec_holds_exactly_the_block_fields():
  spec = load_config('default').model.nonlocal_block
  # The network sets the block's dtype, BatchNorm settings and pools from its own fields; the rest are the spec.
  owned = {'parent', 'name', 'dtype', 'bn_axis_name', 'bn_momentum', 'bn_epsilon', 'pool_implementation'}
  # ... and 'kind' says which block of the family (issue 17) the fields belong to.
  assert set(spec.keys()) == {f.name for f in dataclasses.fields(NonLocalBlock)} - owned | {'kind'}
  assert spec.kind == 'nonlocal'
  assert (spec.pairwise, spec.subsample, spec.pool_position, spec.norm) == ('embedded_gaussian', (1, 2, 2), 'before',
                                                                           None)
  # Fields whose default is None take a value of their annotated type later (from a flag or a sweep) ...
  spec.inter_channels, spec.temporal_groups, spec.positions = 64, 4, 'space'
  # ... and only of that type.
  with pytest.raises(TypeError):
    spec.inter_channels = 'wide'
  model = build_model(load_config('kinetics_nl', 'arch=c2d').model)
  assert model.nonlocal_kwargs()['chunk_size'] == NonLocalBlock.chunk_size  # One default, the block's.


def test_kinetics_nl_default_is_nl_c2d_r50_with_5_blocks():
  config = load_config('kinetics_nl', None)
  model = build_model(config.model)
  assert (model.temporal, model.depth, model.nonlocal_locations, model.stem) == ('c2d', 50, '5', '32x2')
  assert model.num_nonlocal_blocks() == 5


def test_kinetics_nl_variant_argument():
  config = load_config('kinetics_nl', 'arch=i3d,depth=101,blocks=5,pairwise=dot_product,frames=8x8')
  model = build_model(config.model)
  assert (model.temporal, model.depth, model.nonlocal_block['pairwise'], model.stem) == ('i3d_3x1x1', 101,
                                                                                        'dot_product', '8x8')
  assert model.placement() == ((), (1, 3), (6, 13, 20), ())
  assert (config.data.num_frames, config.data.frame_stride) == (8, 8)
  config = load_config('kinetics_nl', 'positions=time')
  assert (config.data.num_frames, config.data.frame_stride) == (32, 2)
  assert build_model(config.model).nonlocal_kwargs()['subsample'] is None
  config = load_config('kinetics_c2d', 'depth=101')
  model = build_model(config.model)
  assert (model.temporal, model.depth, model.num_nonlocal_blocks()) == ('c2d', 101, 0)
  keys = r"\['arch', 'block', 'blocks', 'depth', 'frames', 'pairwise', 'positions'\]"
  with pytest.raises(ValueError, match='among ' + keys):
    load_config('kinetics_nl', 'layers=5')
  with pytest.raises(ValueError, match=r"one of \['101', '50'\]"):
    load_config('kinetics_nl', 'depth=152')


def test_build_model_from_a_plain_mapping_with_lists():
  model = build_model({'name': 'resnet_image', 'depth': 20, 'stem': 'cifar', 'num_classes': 10,
                       'nonlocal_locations': 'res3', 'stage_sizes': [3, 3, 3], 'dtype': 'bfloat16'})
  assert isinstance(model, ResNetImage)
  assert model.stage_sizes == (3, 3, 3) and model.dtype == jnp.bfloat16
  assert model.placement() == ((), (1,), ())
  model = build_model({'name': 'resnet_video', 'nonlocal_locations': {'res3': [1, 3], 4: [5]}})
  assert model.placement() == ((), (1, 3), (5,), ())
  hash(model)  # attributes stay hashable


def test_unknown_model_name_lists_the_models():
  with pytest.raises(ValueError, match=r"one of \('resnet_video', 'resnet_image'\), got 'resnet_3d'"):
    build_model({'name': 'resnet_3d'})


def test_unknown_field_lists_the_allowed_fields():
  config = ml_collections.ConfigDict({'name': 'resnet_video', 'nonlocal_type': 'dot'})
  with pytest.raises(ValueError, match=r"\['nonlocal_type'\].*Allowed fields:.*nonlocal_block"):
    build_model(config)
  with pytest.raises(ValueError, match="'temporal'"):
    build_model({'name': 'resnet_image', 'temporal': 'c2d'})


@pytest.mark.parametrize('fields,message', [
    ({'temporal': 'i3d'}, r"temporal must be one of \('c2d', 'i3d_3x1x1', 'i3d_3x3x3'\)"),
    ({'stem': '16x4'}, r"stem must be one of \('32x2', '8x8', 'table1'\)"),
    ({'depth': 34}, r'depth must be one of \(50, 101\)'),
    ({'norm': 'frozen'}, r"norm must be one of \('batch', 'affine'\)"),
    ({'nonlocal_block': {'pairwise': 'cosine'}}, 'nonlocal_block.pairwise must be one of'),
    ({'nonlocal_locations': '7'}, r"neither a preset \('none', '1', '5', '10'"),
    ({'nonlocal_locations': 'res6:0'}, 'unknown stage'),
    ({'nonlocal_locations': 'res4:6'}, r'blocks 0 \.\. 5 only'),
    ({'depth': 101, 'nonlocal_locations': '10'}, r'defined for R50 \(3, 4, 6, 3\) stage sizes only'),
    ({'stage_sizes': (1, 1, 1, 1), 'nonlocal_locations': '5'}, 'give the placement per stage'),
    ({'stage_sizes': (1, 1, 1, 1), 'nonlocal_locations': 'res3'}, 'has only 1'),
    ({'temporal': 'i3d_3x1x1', 'temporal_pattern': ((1,), (1,))}, 'one 0/1 entry per residual block'),
    ({'dtype': 'float64'}, 'dtype must be one of'),
    ({'remat': 'blocks'}, r"remat must be one of \('none', 'nonlocal', 'stages', 'all'\)"),
    ({'stride_in_1x1': 'yes'}, 'stride_in_1x1 must be True or False'),
    ({'nonlocal_block': {'subsample': (2, 2)}}, r'nonlocal_block.subsample must be a window of 3 .* for 3D input'),
    ({'nonlocal_block': {'positions': 'time'}}, 'must not pool space'),
    ({'nonlocal_block': {'positions': 'space', 'subsample': (2, 2, 2)}}, 'must not pool time'),
    ({'nonlocal_block': {'positions': 'space'}, 'nonlocal_res3_temporal_groups': 4},
     r"nonlocal_res3_temporal_groups=4 does not fit .*temporal_groups needs positions='spacetime'"),
    ({'nonlocal_block': {'chunk': 64}}, r"nonlocal_block has key\(s\) \['chunk'\].*chunk_size"),
    ({'nonlocal_pairwise': 'dot_product'},
     r'config.model.nonlocal_pairwise is now config.model.nonlocal_block.pairwise'),
])
def test_invalid_values_name_the_field(fields, message):
  with pytest.raises(ValueError, match=message):
    build_model({'name': 'resnet_video', **fields})


def test_too_small_input_says_what_size_to_use():
  # 32x2 stem: T -> ceil(T/2) at conv1 -> pool1 (2, stride 2) -> pool2 (2, stride 2) needs conv1 >= 4, T >= 7.
  # A non-local block in res5 pools 2×2: res5 = ceil(H/32) >= 2 needs H >= 33.
  model = ResNetVideo(stage_sizes=(1, 1, 1, 1), width=4, nonlocal_locations='res5:0')
  with pytest.raises(ValueError, match=r'T×H×W = 4×32×32 do not fit .*Use clips of at least 7×33×33'):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32))
  # The 8x8 stem keeps T until pool2 (window 2), so 2 frames suffice.
  model = ResNetVideo(stage_sizes=(1, 1, 1, 1), width=4, stem='8x8')
  with pytest.raises(ValueError, match=r'shrinks to nothing at pool2. Use clips of at least 2×1×1'):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 1, 32, 32, 3), jnp.float32))
  with pytest.raises(ValueError, match=r'expects channels-last clips \(B, T, H, W, C\)'):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32))
  groups = ResNetVideo(stage_sizes=(1, 1, 1, 1), width=4, stem='8x8', nonlocal_locations='res3:0',
                       nonlocal_res3_temporal_groups=4)
  with pytest.raises(ValueError, match='nonlocal_res3_temporal_groups=4 does not divide'):
    jax.eval_shape(groups.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 12, 32, 32, 3), jnp.float32))
  image = ResNetImage(depth=50, nonlocal_locations='res5')
  with pytest.raises(ValueError, match='at least 33×33'):
    jax.eval_shape(image.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def test_placement_errors():
  with pytest.raises(ValueError, match='one sequence of block indices per stage'):
    resolve_nonlocal_locations([[1], [2]], (3, 4, 6, 3))
  with pytest.raises(ValueError, match='must be integers'):
    resolve_nonlocal_locations('res3:a,b', (3, 4, 6, 3))


def test_summary_command_prints_stages_and_totals():
  result = subprocess.run(
      [sys.executable, '-m', 'nonlocal_jax.models.summary', '--config=configs/kinetics_c2d.py:frames=8x8'],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT})
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert 'input 1×8×224×224×3' in out  # from the config's data.num_frames and crop_size
  assert '| res4 | 4×14×14×1024 |' in out
  assert '**24,327,632** (24.33 M)' in out
  assert 'multiply-adds' in out
