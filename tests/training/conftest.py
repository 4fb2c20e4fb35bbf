"""Session-wide state of the training tests: the tiny synthetic set of configs/test.py (generated once per worker),
the reference run, and one JAX compilation cache that this process and every main.py subprocess share."""

import os

import jax
import pytest


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the session (all workers): a program compiled once is loaded after.

  A loaded executable is the one compiled before, so the runs compared bit for bit stay comparable.
  """
  path = str(tmp_path_factory.getbasetemp().parent / 'jax_compilation_cache')
  os.makedirs(path, exist_ok=True)
  before = {k: os.environ.get(k) for k in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  os.environ.update(JAX_COMPILATION_CACHE_DIR=path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')  # Subprocesses.
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  yield path
  jax.config.update('jax_compilation_cache_dir', None)
  for k, v in before.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS directory holding configs/test.py's synthetic variant (16 train clips of 4×16×16)."""
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from tests.training import helpers  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('train_data'))
  synthetic = helpers.load_config().data.synthetic
  prepare.prepare_synthetic('synthetic_long_range/same_different', path, **dict(synthetic.items()))
  return path


@pytest.fixture(scope='session')
def reference_run(data_dir, tmp_path_factory):
  """The uninterrupted 1-device run (in this process) that the multi-device and resumed runs must match."""
  from nonlocal_jax import training  # pylint: disable=g-import-not-at-top
  from tests.training import helpers  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('reference'))
  config = helpers.load_config(**helpers.COMPARABLE)
  config.data.data_dir = data_dir
  config.train.eval_at_end = True
  training.train_and_evaluate(config, workdir)
  return {'workdir': workdir, 'params': helpers.final_params(workdir), 'config': config}
