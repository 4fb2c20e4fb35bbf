"""Session-wide state of the training tests: the tiny synthetic set of configs/test.py (generated once per worker)
and the reference run (the compilation cache they share is the root conftest's)."""

import pytest


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
