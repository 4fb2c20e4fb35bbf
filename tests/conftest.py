"""Shared test set-up: run on the CPU and keep TensorFlow quiet; a ram:// directory standing in for gs://."""

import os
import uuid

import pytest

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ['NO_GCE_CHECK'] = 'true'


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
