"""A two-variant sweep of configs/test.py (C2D and NL), for tests/sweep: seconds per variant on a CPU."""

import importlib.util
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_config(arg=None):
  """configs/test.py, shortened to 2 steps."""
  spec = importlib.util.spec_from_file_location('configs_test', os.path.join(_ROOT, 'configs', 'test.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.train.num_steps, config.train.step_boundaries = 2, (1,)
  config.train.async_checkpoints = False
  return config


def get_sweep(arg=None):
  """The baseline without blocks and the dot-product non-local network."""
  del arg
  return [{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'},
          {'name': 'nl_dot', 'label': 'NL dot-product', 'model.nonlocal_block.pairwise': 'dot_product'}]
