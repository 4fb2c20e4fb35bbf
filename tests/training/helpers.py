"""Helpers of the training tests: configs, main.py in a subprocess (fake devices, several processes), params."""

import os
import shutil
import socket
import subprocess
import sys

import flax
import jax
import numpy as np

from nonlocal_jax import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What the comparable runs share: synchronised BN (so that the split over devices does not change the function),
# a rate small enough that rounding differences stay small, checkpoints every 2 steps.
COMPARABLE = {'model.bn_axis_name': 'batch', 'train.num_steps': 10, 'train.checkpoint_every_steps': 2,
              'train.log_every_steps': 2, 'train.step_boundaries': (8,), 'train.base_learning_rate': 0.02,
              'train.eval_at_end': False}


def load_config(name='test', arg=None, **overrides):
  """configs/<name>.py's get_config(arg) with dotted overrides of any depth ('train.num_steps': 2)."""
  config = config_files.load_module(os.path.join(ROOT, 'configs', f'{name}.py')).get_config(arg)
  for key, value in overrides.items():
    *sections, field = key.split('.')
    node = config
    for section in sections:
      node = node[section]
    node[field] = value
  return config


def flags_for(overrides):
  """--config.x=y flags for main.py."""
  out = []
  for key, value in overrides.items():
    if isinstance(value, tuple):
      value = '(' + ','.join(str(v) for v in value) + ',)'
    out.append(f'--config.{key}={value}')
  return out


def env_for(devices=1):
  """The environment of a main.py subprocess with ``devices`` fake CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', NO_GCE_CHECK='true',
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip(),
             PYTHONPATH=ROOT)
  return env


def main_command(workdir, data_dir, overrides=(), config='configs/test.py', mode='train'):
  """The main.py command line of a test run."""
  return [sys.executable, os.path.join(ROOT, 'main.py'), f'--config={os.path.join(ROOT, config)}',
          f'--workdir={workdir}', f'--mode={mode}', f'--config.data.data_dir={data_dir}'] + flags_for(
              dict(overrides))


def run_main(workdir, data_dir, overrides=(), devices=1, timeout=240, env=None, **kwargs):
  """Runs main.py to completion (``env``: variables added to ``env_for(devices)``); returns the CompletedProcess
  (output in .stdout/.stderr)."""
  return subprocess.run(main_command(workdir, data_dir, overrides, **kwargs), env={**env_for(devices), **(env or {})},
                        cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def free_port():
  """A TCP port nobody listens on now (for the coordinator of a multi-process run)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def copy_run(reference_run, folder, steps=None):
  """A copy of the reference run's workdir in ``folder``/run, holding only the checkpoints ``steps`` (None: all):
  the reference is shared by the test workers, so a test that writes into a run writes into a copy."""
  workdir = os.path.join(str(folder), 'run')
  shutil.copytree(reference_run['workdir'], workdir)
  for name in os.listdir(os.path.join(workdir, 'checkpoints')):
    if steps is not None and int(name) not in steps:
      shutil.rmtree(os.path.join(workdir, 'checkpoints', name))
  return workdir


def final_params(workdir):
  """Flat {path: array} of the parameters and BN statistics of the latest checkpoint in ``workdir``."""
  # Here, not at the top: the model and config tests import load_config and need not load TensorFlow and orbax.
  from nonlocal_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  variables = checkpoint.load_variables(workdir)
  return flax.traverse_util.flatten_dict(variables, sep='/')


def params_digest(state):
  """Per-parameter float64 sums of a TrainState (for comparing runs)."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep='/')
  return {k: float(np.sum(np.asarray(v, np.float64))) for k, v in flat.items()}


def assert_same(a, b, rtol=1e-3, atol=1e-4):
  """Same keys, values close (different summation orders only)."""
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)
