"""Shared test set-up: run on the CPU and keep TensorFlow quiet."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ['NO_GCE_CHECK'] = 'true'
