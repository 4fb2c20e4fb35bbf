"""Work-arounds for TFDS behaviour that would break a locally defined builder."""

from __future__ import annotations

import inspect

from etils import epath
from tensorflow_datasets.core import utils as tfds_utils


class LocalCodePath:
  """Mixin for builders defined in this package: gives TFDS the builder's file directly.

  TFDS 4.9's own ``code_path`` lookup, for a builder outside ``tensorflow_datasets``, imports the
  ``importlib_resources`` back-port, which TFDS declares only for Python < 3.9; on newer Pythons without it,
  ``download_and_prepare`` fails with ModuleNotFoundError.
  """

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """The file that defines the builder class (TFDS looks for checksums beside it)."""
    return epath.Path(inspect.getfile(cls))
