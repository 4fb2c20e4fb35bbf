"""Work-arounds for TFDS behaviour that would break a locally defined builder, or misdescribe what it does."""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

from absl import logging
from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils
from tensorflow_datasets.core.utils import tqdm_utils


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


class LocalPreparationMessages:
  """Mixin for builders whose data is made here: TFDS's download messages go to the log, not to the console.

  TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown size, ...)" before and "Dataset
  ... downloaded and prepared to ..." after preparing, to stdout, not to its log. Nothing is downloaded by these
  builders, and ``nonlocal_jax.data.prepare`` says what it does in its own words.
  """

  def _log_download_bytes(self) -> None:
    logging.info('Preparing %s in %s.', self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info('Prepared %s in %s.', self.name, self.data_dir)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
  """TFDS shows no progress bars inside the block (it has a switch but no way to read it back: read its flag)."""
  shown = getattr(tqdm_utils, '_active', True)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(shown)
