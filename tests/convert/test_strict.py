"""The strict check, ignore patterns, file reading, name mappings and the exact round trip to Caffe2 names."""

import os
import pickle

import numpy as np
import pytest

from nonlocal_jax import blobs as blobs_lib
from nonlocal_jax import convert
from tests.convert import helpers
from tests.convert.reference import Arch, make_blobs

ARCH = Arch(stage_sizes=(1, 1, 1, 1), nonlocal_after=((), (0,), (), ()))
SHAPE = (1, 4, 32, 32, 3)


@pytest.fixture(scope='module')
def abstract():
  return helpers.abstract_variables(helpers.video_model(ARCH), SHAPE)


@pytest.fixture(scope='module')
def initial():
  return helpers.initial_variables(helpers.video_model(ARCH), SHAPE)


def test_every_variable_filled_and_extras_skipped(abstract):
  blobs = make_blobs(ARCH)
  variables = convert.convert_blobs(blobs, abstract)
  np.testing.assert_array_equal(variables['params']['conv1']['kernel'], blobs['conv1_w'].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(variables['params']['nonlocal_conv3_0']['theta']['kernel'],
                                blobs['nonlocal_conv3_0_theta_w'][:, :, 0, 0, 0].T)
  np.testing.assert_array_equal(variables['params']['pred']['kernel'], blobs['pred_w'].T)
  np.testing.assert_array_equal(variables['batch_stats']['res3_0']['branch2b_bn']['var'],
                                blobs['res3_0_branch2b_bn_riv'])


def test_error_lists_every_difference(abstract):
  blobs = make_blobs(ARCH)
  del blobs['res4_0_branch2a_bn_rm'], blobs['pred_b']
  blobs['pred_w'] = np.zeros((7, blobs['pred_w'].shape[1]), np.float32)  # Another number of classes.
  blobs['res9_0_branch2a_w'] = np.zeros((1, 1, 1, 1, 1), np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.convert_blobs(blobs, abstract)
  message = str(e.value)
  assert message.splitlines()[0].endswith('--ignore=REGEX,...')
  assert '2 model variable(s) have no blob' in message
  for needle in ('no blob: res4_0_branch2a_bn_rm (16,)', 'no blob: pred_b (5,)',
                 'other shape: pred_w: checkpoint (7, 128), model (128, 5)', 'unused blob: res9_0_branch2a_w'):
    assert needle in message
  assert 'model_iter' not in message and 'momentum' not in message


def test_ignore_keeps_initial_values(initial):
  blobs = make_blobs(ARCH)
  blobs['pred_w'] = np.zeros((7, blobs['pred_w'].shape[1]), np.float32)
  blobs['pred_b'] = np.zeros(7, np.float32)
  with pytest.raises(convert.ConversionError):
    convert.convert_blobs(blobs, initial)
  variables = convert.convert_blobs(blobs, initial, ignore=['pred_.*'])
  np.testing.assert_array_equal(variables['params']['pred']['kernel'], initial['params']['pred']['kernel'])
  np.testing.assert_array_equal(variables['params']['conv1']['kernel'], blobs['conv1_w'].transpose(2, 3, 4, 1, 0))
  with pytest.raises(convert.ConversionError):  # Patterns match whole names: 'pred' alone skips nothing.
    convert.convert_blobs(blobs, initial, ignore=['pred'])


def test_ignored_variable_needs_initial_values(abstract):
  blobs = make_blobs(ARCH)
  del blobs['pred_b']
  with pytest.raises(ValueError, match='pass initialised variables'):
    convert.convert_blobs(blobs, abstract, ignore=['pred_b'])


@pytest.mark.parametrize('affine', [False, True])
def test_round_trip_is_exact(affine, tmp_path):
  arch = Arch(stage_sizes=(1, 1, 1, 1), nonlocal_after=((), (0,), (), ()), i3d=True, affine=affine)
  blobs = make_blobs(arch, extras=False)
  abstract = helpers.abstract_variables(helpers.video_model(arch), SHAPE)
  exported = convert.export_blobs(convert.convert_blobs(blobs, abstract))
  assert sorted(exported) == sorted(blobs)
  for name, value in blobs.items():
    assert exported[name].shape == value.shape and exported[name].dtype == np.float32, name
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  convert.save_caffe2(exported, tmp_path / 'out.pkl')
  again = convert.load_blobs(str(tmp_path / 'out.pkl'))
  assert all(np.array_equal(again[k], v) for k, v in blobs.items()) and sorted(again) == sorted(blobs)


def test_reads_python2_pickles_and_plain_dicts(tmp_path):
  blobs = make_blobs(ARCH)
  for payload, name in (({'blobs': blobs}, 'wrapped.pkl'), (blobs, 'plain.pkl')):
    with open(tmp_path / name, 'wb') as f:
      pickle.dump(payload, f, protocol=2)
    loaded = convert.load_blobs(str(tmp_path / name))
    assert sorted(loaded) == sorted(blobs)
  np.savez(tmp_path / 'w.npz', **{k: v for k, v in blobs.items()})
  assert sorted(convert.load_blobs(str(tmp_path / 'w.npz'))) == sorted(blobs)


def test_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    convert.load_blobs(str(tmp_path / 'missing.pkl'))
  (tmp_path / 'junk.pkl').write_bytes(b'this is not a pickle')
  with pytest.raises(ValueError, match='is not a readable pickle'):
    convert.load_blobs(str(tmp_path / 'junk.pkl'))
  with open(tmp_path / 'list.pkl', 'wb') as f:
    pickle.dump([1, 2], f)
  with pytest.raises(ValueError, match='not a dict of weights'):
    convert.load_blobs(str(tmp_path / 'list.pkl'))


def test_torch_checkpoint_without_torch(tmp_path, monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == 'torch':
      raise ImportError('No module named torch')
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(builtins, '__import__', no_torch)
  (tmp_path / 'model.pyth').write_bytes(b'x')
  with pytest.raises(ImportError, match='PyTorch is not installed: pip install torch'):
    convert.load_blobs(str(tmp_path / 'model.pyth'))


def _rename(blobs, table):
  return {table[k]: v for k, v in blobs.items() if k in table}


def test_pyslowfast_names():
  names = {
      's1.pathway0_stem.conv.weight': 'conv1_w', 's1.pathway0_stem.bn.running_var': 'res_conv1_bn_riv',
      's1.pathway0_stem.bn.num_batches_tracked': None,
      's2.pathway0_res0.branch1.weight': 'res2_0_branch1_w',
      's2.pathway0_res0.branch1_bn.weight': 'res2_0_branch1_bn_s',
      's3.pathway0_res2.branch2.a.weight': 'res3_2_branch2a_w',
      's4.pathway0_res5.branch2.c_bn.running_mean': 'res4_5_branch2c_bn_rm',
      's3.pathway0_nonlocal1.conv_theta.weight': 'nonlocal_conv3_1_theta_w',
      's4.pathway0_nonlocal3.conv_out.bias': 'nonlocal_conv4_3_out_b', 's4.pathway0_nonlocal3.bn.bias':
      'nonlocal_conv4_3_bn_b', 'head.projection.weight': 'pred_w', 'head.projection.bias': 'pred_b'}
  for torch_name, caffe2 in names.items():
    assert convert.pyslowfast_name(torch_name) == caffe2, torch_name
  state = {'module.' + k: np.ones(1) for k in names}
  assert sorted(blobs_lib._to_caffe2_names(state)) == sorted(v for v in names.values() if v)


def test_torchvision_names():
  names = {'conv1.weight': 'conv1_w', 'bn1.running_mean': 'res_conv1_bn_rm', 'layer1.0.conv3.weight':
           'res2_0_branch2c_w', 'layer3.4.bn2.weight': 'res4_4_branch2b_bn_s', 'layer4.0.downsample.0.weight':
           'res5_0_branch1_w', 'layer4.0.downsample.1.running_var': 'res5_0_branch1_bn_riv', 'fc.weight': 'pred_w',
           'layer2.1.bn1.num_batches_tracked': None}
  for torch_name, caffe2 in names.items():
    assert convert.torchvision_name(torch_name) == caffe2, torch_name


def test_checkpoint_files_on_a_remote_file_system(remote_dir, tmp_path, monkeypatch):
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)  # Where a wrongly local './ram:/...' folder would appear.
  blobs = make_blobs(ARCH)
  convert.save_caffe2(blobs, f'{remote_dir}/out.pkl')
  npz = io.BytesIO()
  np.savez(npz, **blobs)
  with tf.io.gfile.GFile(f'{remote_dir}/w.npz', 'wb') as f:
    f.write(npz.getvalue())
  for name in ('out.pkl', 'w.npz'):
    loaded = convert.load_blobs(f'{remote_dir}/{name}')
    assert sorted(loaded) == sorted(blobs) and all(np.array_equal(loaded[k], v) for k, v in blobs.items()), name
  with pytest.raises(FileNotFoundError, match='does not exist'):
    convert.load_blobs(f'{remote_dir}/missing.pkl')
  assert os.listdir(tmp_path) == []
