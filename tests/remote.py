"""A stand-in for gs:// in tests: TensorFlow's in-memory file system (ram://), reachable through etils.epath.

epath knows gs://, s3://, az:// and hf:// only. ``register_ram_scheme`` registers ram:// the way epath registers
gs://, so a ram:// path takes the code path of a gs:// path (epath's TensorFlow backend, ``tf.io.gfile``) and
only the storage behind ``tf.io.gfile`` differs: the package's remote-path handling runs without a network.
What it cannot stand in for: orbax writes arrays with TensorStore, which knows gs:// and local files, not ram://.
"""

import os


def register_ram_scheme(monkeypatch) -> None:
  """Makes ``epath.Path('ram://...')`` a path on TensorFlow's in-memory file system until the test ends."""
  from etils.epath import backend, gpath, register  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  monkeypatch.setattr(gpath, '_URI_PREFIXES', gpath._URI_PREFIXES + ('ram://',))
  monkeypatch.setattr(gpath, '_URI_SCHEMES', gpath._URI_SCHEMES | {'ram'})
  monkeypatch.setitem(gpath._URI_MAP_ROOT, 'ram://', '/ram/')
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'ram', backend.tf_backend)
  monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, 'ram://', gpath.PosixGPath)


def copy_tree(src: str, dst: str) -> None:
  """Copies the local directory ``src`` into ``dst`` (a ram:// directory, created if needed)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for root, _, files in os.walk(src):
    relative = os.path.relpath(root, src)
    target = dst if relative == '.' else f'{dst}/{relative}'
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(root, name), f'{target}/{name}')


def files_under(root: str) -> dict:
  """{path relative to ``root``: bytes} of every file under the ram:// directory ``root``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for directory, _, files in tf.io.gfile.walk(root):
    for name in files:
      path = f'{directory}/{name}'
      with tf.io.gfile.GFile(path, 'rb') as f:
        out[path[len(root) + 1:]] = f.read()
  return out
