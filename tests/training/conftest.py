"""Session-wide state of the training tests, made once for all test workers (tests/once.py): the tiny synthetic set
of configs/test.py and the reference run (the compilation cache they share is the root conftest's)."""

import pytest


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS directory holding configs/test.py's synthetic variant (16 train clips of 4×16×16)."""
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from tests.once import once  # pylint: disable=g-import-not-at-top
  from tests.training import helpers  # pylint: disable=g-import-not-at-top

  def make(folder):
    synthetic = helpers.load_config().data.synthetic
    prepare.prepare_synthetic('synthetic_long_range/same_different', str(folder), **dict(synthetic.items()))
    return str(folder)

  return once(tmp_path_factory, 'train_data', make)  # One for all workers: the shared run records its path.


@pytest.fixture(scope='session')
def reference_run(data_dir, tmp_path_factory):
  """The uninterrupted 1-device run that the multi-device and resumed runs must match: trained once per test
  session (by the first worker that asks, in its process) and read by every worker. Its workdir is shared: a test
  that writes into a run copies it first."""
  from nonlocal_jax import training  # pylint: disable=g-import-not-at-top
  from tests.once import once  # pylint: disable=g-import-not-at-top
  from tests.training import helpers  # pylint: disable=g-import-not-at-top
  config = helpers.load_config(**helpers.COMPARABLE)
  config.data.data_dir = data_dir
  config.train.eval_at_end = True

  def make(folder):
    training.train_and_evaluate(config, str(folder))
    return str(folder)

  workdir = once(tmp_path_factory, 'reference_run', make)
  return {'workdir': workdir, 'params': helpers.final_params(workdir), 'config': config}
