"""Paths on a local disk or on any file system ``etils.epath`` reaches (``gs://bucket/dir`` on Colab and TPU pods).

Every path the package reads or writes (workdir, data_dir, init_checkpoint, results) goes through
``epath.Path``, as TFDS and orbax do: local paths through the ``os`` functions, so they behave exactly as before,
and remote ones through TensorFlow's ``tf.io.gfile`` (epath's choice when TensorFlow is installed). What differs
between the two is kept here: ``os.path.abspath`` and ``expanduser`` would turn ``gs://b/run`` into a local
folder ``./gs:/b/run``, so remote paths are passed through unchanged.
"""

from __future__ import annotations

import os
import uuid
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_remote(path: PathLike) -> bool:
  """Whether ``path`` names its file system by a scheme (``gs://``, ``s3://``) rather than being a local path."""
  # The test epath itself applies to strings before picking a backend.
  return '://' in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """``path`` as an ``epath.Path``; raises ValueError, in one sentence, for a scheme epath does not know."""
  try:
    return epath.Path(path)
  except (KeyError, NotImplementedError):
    scheme = os.fspath(path).split('://', 1)[0]
    raise ValueError(f'{path} is on a file system ({scheme}://) that this installation cannot reach: use a local '
                     'path or a gs:// path.') from None


def expand(path: PathLike) -> epath.Path:
  """``path`` with ``~`` expanded when it is local; a remote path unchanged."""
  return as_path(path) if is_remote(path) else as_path(os.path.expanduser(os.fspath(path)))


def absolute(path: PathLike) -> epath.Path:
  """``path`` made absolute when it is local (orbax needs that: the cwd may change); a remote path unchanged."""
  return as_path(path) if is_remote(path) else as_path(os.path.abspath(os.fspath(path)))


def errors(path: PathLike) -> tuple[type[BaseException], ...]:
  """The exceptions a failed read or write of ``path`` raises: OSError, and TensorFlow's errors when remote.

  epath turns only some ``tf.io.gfile`` errors into OSError (a refused write on GCS stays a
  ``tf.errors.PermissionDeniedError``); TensorFlow is imported only for remote paths, where epath has loaded it.
  """
  if not is_remote(path):
    return (OSError,)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (OSError, tf.errors.OpError)


def describe_error(e: BaseException) -> str:
  """The reason of a file error in a few words: ``strerror`` for OS errors, TensorFlow's message otherwise."""
  return getattr(e, 'strerror', None) or getattr(e, 'message', None) or str(e)


def write_atomic(path: PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` (local or remote) so that readers see the old file or the whole new one.

  The bytes go to a hidden temporary file beside ``path``, which is then renamed over it: a preempted or concurrent
  writer never leaves a half-written file under the final name, and a failed write leaves no temporary file.
  """
  # Not tempfile.mkstemp: its files are private to the user whatever the umask, and it knows only local disks.
  path = as_path(path)
  tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def mtime(path: PathLike) -> float:
  """Seconds since the epoch of the last change of ``path`` (to the second on remote file systems)."""
  if not is_remote(path):
    return os.path.getmtime(path)
  return float(as_path(path).stat().mtime)


__all__ = ['PathLike', 'absolute', 'as_path', 'describe_error', 'errors', 'expand', 'is_remote', 'mtime',
           'write_atomic']
