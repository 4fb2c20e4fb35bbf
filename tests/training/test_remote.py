"""Workdirs, config.json, init_checkpoint and checkpoint paths on a remote file system (ram:// stands in for gs://).

A checkpoint itself cannot be written to ram://: orbax writes arrays with TensorStore, which knows gs:// and local
files only. What is checked instead is that a gs:// workdir reaches orbax unchanged.
"""

import json
import os

import pytest
import tensorflow as tf

from nonlocal_jax import training
from nonlocal_jax.training import checkpoint, loop
from tests.training import helpers


def test_workdir_is_created_and_probed_on_its_file_system(remote_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Where a wrongly local './ram:/...' folder would appear.
  workdir = f'{remote_dir}/runs/nl'
  training.check_workdir(workdir)
  assert tf.io.gfile.isdir(workdir) and tf.io.gfile.listdir(workdir) == []  # The write probe is removed.
  loop._save_config(helpers.load_config(), workdir)  # pylint: disable=protected-access
  with tf.io.gfile.GFile(f'{workdir}/config.json') as f:
    assert json.load(f)['train']['num_steps'] == helpers.load_config().train.num_steps
  assert os.listdir(tmp_path) == []


def test_a_file_system_nobody_knows_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(training.ConfigError, match=r'^The workdir nosuchfs://b/run is on a file system this installation '
                                              r'cannot reach: pass a local --workdir or a gs:// one\.$'):
    training.check_workdir('nosuchfs://b/run')
  assert os.listdir(tmp_path) == []


def test_remote_init_checkpoint_is_checked_there(data_dir, remote_dir):
  config = helpers.load_config()
  config.data.data_dir = data_dir
  baseline = f'{remote_dir}/baseline'
  tf.io.gfile.makedirs(f'{baseline}/checkpoints')
  config.train.init_checkpoint = baseline
  training.startup(config, f'{remote_dir}/run')
  with pytest.raises(FileNotFoundError, match=f'^config.train.init_checkpoint={baseline} holds no checkpoint'):
    checkpoint.load_variables(baseline)
  config.train.init_checkpoint = f'{remote_dir}/missing'
  with pytest.raises(training.ConfigError, match=f'init_checkpoint={remote_dir}/missing is not a directory'):
    training.startup(config, f'{remote_dir}/run')


def test_a_gs_workdir_reaches_orbax_unchanged(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert checkpoint.checkpoint_dir('gs://bucket/runs/nl') == 'gs://bucket/runs/nl/checkpoints'
  # Local workdirs are still made absolute: orbax refuses relative paths.
  assert checkpoint.checkpoint_dir('nl') == os.path.join(os.getcwd(), 'nl', 'checkpoints')
  seen = []
  monkeypatch.setattr(checkpoint.Manager, '__init__', lambda self, directory, options: seen.append(directory))
  checkpoint.create_manager('gs://bucket/runs/nl')
  assert seen == ['gs://bucket/runs/nl/checkpoints']
