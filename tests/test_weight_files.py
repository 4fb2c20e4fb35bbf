"""Weight files never run code: generated malicious pickles, npz archives and a py2-style blob pickle."""

import io
import os
import pickle

import numpy as np
import pytest

from nonlocal_jax import convert
from nonlocal_jax import weight_files


class _Payload:
  """Unpickling this calls os.system: it would create ``marker``."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def _pickle(obj, path, protocol):
  with open(path, 'wb') as f:
    pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize('protocol', [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize('where', ['top', 'blob', 'key'])
def test_a_payload_in_a_pickle_is_refused_and_does_not_run(tmp_path, protocol, where):
  marker = tmp_path / 'ran'
  payload = _Payload(marker)
  obj = {'top': payload, 'blob': {'blobs': {'conv1_w': payload}},
         'key': {'blobs': {'conv1_w': np.ones(2, np.float32), 'lr': [1.0, payload]}}}[where]
  _pickle(obj, tmp_path / 'model.pkl', protocol)
  # The payload is real: the standard unpickler runs it.
  with open(tmp_path / 'model.pkl', 'rb') as f:
    pickle.load(f)
  assert marker.exists()
  marker.unlink()
  with pytest.raises(weight_files.UnsafeFileError, match=r'model.pkl was not loaded: it asks to load '
                     r'(posix|os|nt)\.system, which a weight file never needs'):
    convert.load_blobs(str(tmp_path / 'model.pkl'))
  assert not marker.exists()


def test_other_globals_are_refused_too(tmp_path):
  # A class whose construction has effects (a file opened for writing), not a function call.
  _pickle({'blobs': {'w': io.FileIO}}, tmp_path / 'cls.pkl', 2)
  with pytest.raises(weight_files.UnsafeFileError, match=r'_io\.FileIO'):
    convert.load_blobs(str(tmp_path / 'cls.pkl'))


def test_python2_style_blob_pickle_with_numpy_scalars_loads_exactly(tmp_path):
  blobs = {'conv1_w': np.arange(24, dtype=np.float32).reshape(2, 3, 1, 2, 2), 'pred_b': np.array([0.5, -1.5]),
           'model_iter': np.int64(400000), 'lr': np.float32(1e-4), 'res2_0_branch2a_w_momentum': np.zeros(3)}
  data = pickle.dumps({'blobs': blobs}, protocol=2)
  # Caffe2's Python 2 pickles name NumPy's old module; NumPy 2 writes numpy._core.
  data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
  assert b'numpy.core.multiarray' in data
  (tmp_path / 'py2.pkl').write_bytes(data)
  loaded = weight_files.read_weight_file(str(tmp_path / 'py2.pkl'))
  assert sorted(loaded) == sorted(blobs)
  for k, v in blobs.items():
    np.testing.assert_array_equal(loaded[k], v)
    assert np.asarray(loaded[k]).dtype == np.asarray(v).dtype


def test_npz_with_pickled_objects_or_random_bytes_is_refused(tmp_path):
  np.savez(tmp_path / 'objects.npz', w=np.array([{'a': 1}], dtype=object))
  (tmp_path / 'random.npz').write_bytes(np.random.default_rng(0).bytes(4096))
  for name in ('objects.npz', 'random.npz'):
    with pytest.raises(ValueError, match=rf'{name} is not an .npz archive of NumPy arrays .* archives of pickled '
                       'objects are refused') as info:
      convert.load_blobs(str(tmp_path / name))
    assert 'allow_pickle' not in str(info.value)


def test_weights_that_are_not_finite_are_refused(tmp_path):
  blobs = {'conv1_w': np.ones((2, 3, 1, 1, 1), np.float32), 'pred_w': np.array([[np.nan, 1.0]], np.float32),
           'pred_b': np.array([np.inf, 0.0], np.float32), 'model_iter': np.int64(5)}
  _pickle({'blobs': blobs}, tmp_path / 'diverged.pkl', 2)
  with pytest.raises(convert.ConversionError, match=r'diverged.pkl holds weights that are not finite \(NaN or '
                     r'Inf\) in pred_b, pred_w: .* use a checkpoint from before it diverged'):
    convert.load_blobs(str(tmp_path / 'diverged.pkl'))


def test_torch_files_load_with_weights_only(tmp_path):
  torch = pytest.importorskip('torch')
  marker = tmp_path / 'ran'
  torch.save({'model_state': {'w': torch.ones(2)}, 'cfg': _Payload(marker)}, tmp_path / 'checkpoint.pyth')
  with pytest.raises(weight_files.UnsafeFileError, match=r'checkpoint.pyth holds objects besides tensors .* '
                     r'only if you trust the file'):
    convert.load_blobs(str(tmp_path / 'checkpoint.pyth'))
  assert not marker.exists()
  torch.save({'model_state': {'s1.pathway0_stem.conv.weight': torch.ones(2, 3, 1, 7, 7)}}, tmp_path / 'ok.pyth')
  assert sorted(convert.load_blobs(str(tmp_path / 'ok.pyth'))) == ['conv1_w']
