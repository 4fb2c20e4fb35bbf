"""The data modules that import TensorFlow, for the training loop: loaded at their first use, not at import.

``training.loop`` and ``training.checks`` name the pipeline modules at their top, but a run on fake data
(``data.name='fake'``) never calls them, and the machines that measure training throughput (a GPU host with JAX
alone) have no TensorFlow, TFDS or PyAV. ``from nonlocal_jax.data.entry import builders`` gives the module
``nonlocal_jax.data.builders`` itself, whose code (and TensorFlow's import) runs at the first attribute read: a
run that reads a dataset behaves as before, and a fake-data run imports no TensorFlow.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def lazy(name: str) -> types.ModuleType:
  """``nonlocal_jax.data.<name>``, registered as imported but executed at its first attribute read."""
  full = f'{__package__}.{name}'
  if full in sys.modules:
    return sys.modules[full]
  spec = importlib.util.find_spec(full)
  spec.loader = importlib.util.LazyLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  sys.modules[full] = module
  setattr(sys.modules[__package__], name, module)  # As a plain import would, so later imports find it.
  spec.loader.exec_module(module)
  return module


builders = lazy('builders')
eval_pipeline = lazy('eval_pipeline')
prepare = lazy('prepare')
train_pipeline = lazy('train_pipeline')
transforms = lazy('transforms')

__all__ = ['builders', 'eval_pipeline', 'lazy', 'prepare', 'train_pipeline', 'transforms']
