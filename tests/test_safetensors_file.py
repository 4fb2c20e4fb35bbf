"""The safetensors writer and reader: the documented byte layout, exact round trips, damaged files refused."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest

from nonlocal_jax import safetensors_file
from nonlocal_jax import weight_files


def _tensors():
  rng = np.random.default_rng(0)
  return {'conv1_w': rng.normal(size=(4, 3, 1, 3, 3)).astype(np.float32), 'pred_b': np.zeros(0, np.float32),
          'f64': rng.normal(size=(2, 2)), 'half': rng.normal(size=3).astype(np.float16),
          'bf16': rng.normal(size=(2, 3)).astype(ml_dtypes.bfloat16), 'count': np.array(7, np.int64),
          'mask': np.array([True, False]), 'big_endian': np.arange(3, dtype='>i4')}


def test_layout_is_the_documented_one():
  a, b = np.array([[1.5, -2.0]], np.float32), np.array([1, 2, 3], np.int16)
  data = safetensors_file.dumps({'b': b, 'a': a}, {'format': 'pt'})
  (size,) = struct.unpack('<Q', data[:8])
  assert size % 8 == 0  # Padded so that the data starts aligned.
  header = json.loads(data[8:8 + size])
  # Names in sorted order, back to back: 'a' (8 bytes) then 'b' (6 bytes), little-endian.
  assert header == {'a': {'dtype': 'F32', 'shape': [1, 2], 'data_offsets': [0, 8]},
                    'b': {'dtype': 'I16', 'shape': [3], 'data_offsets': [8, 14]},
                    '__metadata__': {'format': 'pt'}}
  assert data[8 + size:] == struct.pack('<2f', 1.5, -2.0) + struct.pack('<3h', 1, 2, 3)


def test_round_trip_is_exact(tmp_path):
  tensors = _tensors()
  path = tmp_path / 'w.safetensors'
  safetensors_file.save(tensors, path)
  for loaded in (safetensors_file.load(path), weight_files.read_weight_file(str(path))):
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
      assert loaded[name].shape == array.shape and loaded[name].dtype == array.dtype.newbyteorder('=')
      np.testing.assert_array_equal(loaded[name], array, err_msg=name)
  assert [p.name for p in tmp_path.iterdir()] == ['w.safetensors']  # Written atomically: no temporary left.


def _damage(data, kind):
  (size,) = struct.unpack('<Q', data[:8])
  header = json.loads(data[8:8 + size])
  if kind == 'truncated':
    return data[:-3]
  if kind == 'trailing':
    return data + b'\0'
  if kind == 'header_length':
    return struct.pack('<Q', len(data)) + data[8:]
  if kind == 'not_json':
    return data[:8] + b'[' + data[9:]
  if kind == 'overlap':
    header['b']['data_offsets'] = header['a']['data_offsets']
  if kind == 'wrong_size':
    header['a']['shape'] = [3]
  if kind == 'unknown_dtype':
    header['a']['dtype'] = 'F8'
  text = json.dumps(header).encode()
  return struct.pack('<Q', len(text)) + text + data[8 + size:]


@pytest.mark.parametrize('kind', ['truncated', 'trailing', 'header_length', 'not_json', 'overlap', 'wrong_size',
                                  'unknown_dtype'])
def test_damaged_files_are_refused_in_one_sentence(kind):
  data = safetensors_file.dumps({'a': np.ones(2, np.float32), 'b': np.ones(2, np.float32)})
  assert sorted(safetensors_file.loads(data)) == ['a', 'b']  # The undamaged bytes load.
  with pytest.raises(safetensors_file.SafetensorsError,
                     match=r'^w\.safetensors is not a valid safetensors file \(.*\): export it again or give another '
                           r'file\.$'):
    safetensors_file.loads(_damage(data, kind), 'w.safetensors')


def test_unsupported_dtype_is_refused():
  with pytest.raises(ValueError, match='has dtype complex64, which safetensors cannot hold'):
    safetensors_file.dumps({'z': np.ones(2, np.complex64)})


def test_agrees_with_the_safetensors_package():
  st = pytest.importorskip('safetensors.numpy')
  tensors = {k: v for k, v in _tensors().items() if k != 'bf16'}  # safetensors.numpy has no bfloat16.
  theirs = st.load(safetensors_file.dumps(tensors))
  ours = safetensors_file.loads(st.save(tensors))
  for loaded in (theirs, ours):
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
      np.testing.assert_array_equal(loaded[name], array, err_msg=name)
