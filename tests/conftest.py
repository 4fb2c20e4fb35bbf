"""Shared test set-up: run on the CPU, compile cheaply and once (one persistent compilation cache for the session),
collect garbage less often and keep TensorFlow quiet; a ram:// directory standing in for gs://."""

import gc
import os
import uuid

import pytest

from tests.once import shared_root

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# The tests' programs are tiny and run a few steps, so compiling is most of their time, and LLVM's optimisation
# passes and XLA's MLIR fusion emitters are most of compiling: skip the passes and emit fusions with the older
# elemental emitter (half the compile time of a train step), here and in every subprocess (which inherits the
# environment). The programs (XLA's HLO, what the code under test builds) are unchanged; only their machine code
# is less optimised.
CHEAP_XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                   '--xla_cpu_use_fusion_emitters=false')
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {CHEAP_XLA_FLAGS}".strip()
os.environ['NO_GCE_CHECK'] = 'true'
# Tracing allocates millions of short-lived objects, and with TensorFlow, JAX and every test module loaded each
# full collection walks a large heap: at Python's default thresholds the collector took 42 s of the two workers'
# time in a run of the suite (timed with gc.callbacks), 4.5 s at these. Collection still runs, less often.
gc.set_threshold(100_000, 50, 100)


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the session (all workers, and every subprocess through the environment):
  a program compiled once is loaded after. A loaded executable is the one compiled before, so runs compared bit
  for bit stay comparable."""
  import jax  # pylint: disable=g-import-not-at-top  # After the environment above is set.
  path = str(shared_root(tmp_path_factory) / 'jax_compilation_cache')
  os.makedirs(path, exist_ok=True)
  before = {k: os.environ.get(k) for k in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  os.environ.update(JAX_COMPILATION_CACHE_DIR=path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  yield path
  jax.config.update('jax_compilation_cache_dir', None)
  for k, v in before.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture
def remote_dir(monkeypatch):
  """A new, empty ram:// directory that stands in for gs:// (see tests/remote.py); removed after the test."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests import remote  # pylint: disable=g-import-not-at-top
  remote.register_ram_scheme(monkeypatch)
  root = f'ram://nonlocal_jax_tests/{uuid.uuid4().hex}'
  tf.io.gfile.makedirs(root)
  yield root
  tf.io.gfile.rmtree(root)
