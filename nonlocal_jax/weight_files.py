"""Reading weight files that may come from anyone, without ever running code from them.

A pickle can hold instructions to call any importable function (``os.system``...), which ``pickle.load`` carries
out while reading. Weight files travel between people, so this module trusts none of them:

- Caffe2 ``.pkl`` (and any other pickle): read by ``SafeUnpickler``, which builds only what a blob file holds —
  dicts, lists, tuples, strings, numbers, NumPy arrays, dtypes and scalars (and ``collections.OrderedDict``) — and
  refuses any other global in one sentence, before calling it.
- ``.npz``: ``np.load(..., allow_pickle=False)``: arrays only; an archive with pickled objects is refused.
- ``.safetensors``: a JSON header and raw array bytes (``nonlocal_jax.safetensors_file``): nothing to run.
- PyTorch ``.pyth`` / ``.pth`` / ``.pt``: ``torch.load(..., weights_only=True)`` only (tensors and plain
  containers). PySlowFast checkpoints that also pickle their config object are refused with the command that
  re-saves their weights as an ``.npz``, for a user who trusts the file.

What is trusted: nothing in the file. What is not checked here: that the arrays are the right weights (the
converter matches every name and shape against the model and refuses NaN or Inf values).
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

from nonlocal_jax import paths
from nonlocal_jax import safetensors_file


class UnsafeFileError(ValueError):
  """A weight file holds something other than weights (an object whose loading could run code)."""


def _numpy_core(submodule: str, name: str):
  # NumPy 2 moved numpy.core to numpy._core; Python 2 Caffe2 pickles name the old module.
  core = getattr(np, '_core', None) or np.core
  return getattr(getattr(core, submodule), name)


# (module, name) -> the object a blob pickle may refer to. Python 2 pickles name some modules differently.
_ALLOWED = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('numpy.core.multiarray', '_reconstruct'): _numpy_core('multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'): _numpy_core('multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'): _numpy_core('multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'): _numpy_core('multiarray', 'scalar'),
    # Protocol 5 pickles build arrays from their raw bytes.
    ('numpy.core.numeric', '_frombuffer'): _numpy_core('numeric', '_frombuffer'),
    ('numpy._core.numeric', '_frombuffer'): _numpy_core('numeric', '_frombuffer'),
    # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(text, 'latin1').
    ('_codecs', 'encode'): codecs.encode,
    ('collections', 'OrderedDict'): collections.OrderedDict,
}


class SafeUnpickler(pickle.Unpickler):
  """An unpickler that builds only dicts, lists, strings, numbers and NumPy arrays; anything else is refused."""

  def find_class(self, module: str, name: str) -> Any:
    """Returns the allowed object, or raises UnsafeFileError naming the global the file asked for."""
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise UnsafeFileError(f'it asks to load {module}.{name}, which a weight file never needs (a pickle that '
                          'names it could run code)')


def _unwrap(data: Any, path: str) -> Mapping:
  """The dict of weights inside a checkpoint's top-level object."""
  if isinstance(data, Mapping):
    for key in ('blobs', 'model_state', 'state_dict', 'model'):
      if isinstance(data.get(key), Mapping):
        return data[key]
    return data
  raise ValueError(f'{path} holds a {type(data).__name__}, not a dict of weights: give a Caffe2 .pkl of '
                   "{'blobs': {...}} or a dict of arrays.")


def _read_pickle(path: str, data: bytes) -> Mapping:
  try:
    obj = SafeUnpickler(io.BytesIO(data), encoding='latin1').load()
  except UnsafeFileError as e:
    raise UnsafeFileError(f'{path} was not loaded: {e}. Load only weight files (Caffe2 blob pickles of arrays, '
                          '.npz, PyTorch state dicts).') from None
  except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError,
          KeyError) as e:
    raise ValueError(f'{path} is not a readable pickle ({type(e).__name__}: {e}): give a Caffe2 .pkl of '
                     "{'blobs': {...}}, an .npz of arrays, or a PySlowFast .pyth file.") from None
  return _unwrap(obj, path)


def _read_npz(path: str, data: bytes) -> Mapping:
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
      return dict(archive)
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f'{path} is not an .npz archive of NumPy arrays ({type(e).__name__}); archives of pickled '
                     'objects are refused (loading them could run code): save the weights with np.savez.') from None


def _read_torch(path: str, data: bytes) -> Mapping:
  try:
    # Imported only for a PyTorch file: torch is an optional dependency (and seconds to import).
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f'{path} is a PyTorch checkpoint and PyTorch is not installed: pip install torch (CPU is '
                      'enough), or convert it to an .npz of arrays first.') from None
  try:
    obj = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    # torch raises UnpicklingError (or RuntimeError in older releases) for anything beyond tensors and plain
    # containers; its message is pages long, so only its first line is kept.
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UnsafeFileError(
        f'{path} holds objects besides tensors (PySlowFast also saves its config object), which '
        f'torch.load(weights_only=True) refuses ({first_line[:200]}): only if you trust the file, re-save its '
        "weights as arrays with: python -c \"import torch, numpy as np; s = torch.load('FILE', weights_only=False)"
        "['model_state']; np.savez('FILE.npz', **{k: v.numpy() for k, v in s.items()})\" and convert the .npz."
    ) from None
  return _unwrap(obj, path)


def read_weight_file(path: str) -> Mapping[str, Any]:
  """The dict of weights in the file at ``path`` (local or gs://): arrays or tensors by name, never code."""
  file = paths.as_path(path)
  if not file.is_file():
    raise FileNotFoundError(f'Checkpoint file {path} does not exist: give the path of a Caffe2 .pkl, an .npz, a '
                            '.safetensors or a PySlowFast .pyth file.')
  data = file.read_bytes()
  if path.endswith(('.pyth', '.pth', '.pt')):
    return _read_torch(path, data)
  if path.endswith('.npz'):
    return _read_npz(path, data)
  if path.endswith('.safetensors'):
    return safetensors_file.loads(data, path)
  return _read_pickle(path, data)
