"""Datasets by name: an unprepared or missing dataset fails at start with the command; the names of the classes."""

import re

import pytest
import tensorflow_datasets as tfds

from nonlocal_jax import data
from nonlocal_jax.data import builders
from nonlocal_jax.data import layout as layout_lib
from nonlocal_jax.data import synthetic
from tests.data.conftest import small_video_config, synthetic_config


def test_an_unprepared_dataset_fails_at_start_with_the_command(tmp_path, monkeypatch):
  def no_download(*args, **kwargs):
    raise AssertionError('the pipeline must never prepare or download a dataset')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  for name, command in (('kinetics400', 'python -m nonlocal_jax.data.prepare kinetics400 --videos=DIR'),
                        ('synthetic_long_range/sum_mod10', 'prepare synthetic_long_range/sum_mod10'),
                        ('cifar10', 'prepare cifar10')):
    c = small_video_config(name=name, data_dir=str(tmp_path))
    with pytest.raises(data.DatasetNotPreparedError, match=command):
      data.create_train_iterator(c, seed=0, layout=layout_lib.ProcessLayout(0, 1, 1))


def test_a_remote_data_dir_missing_or_unprepared_names_the_command(remote_dir):
  from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
  name = 'synthetic_long_range/same_different'
  missing = f'{remote_dir}/missing'
  with pytest.raises(data.DatasetNotPreparedError, match=re.escape(
      f'The data directory {missing} does not exist: prepare the dataset there with '
      f'`python -m nonlocal_jax.data.prepare {name} --data_dir={missing}` or set config.data.data_dir')):
    builders.check_prepared(name, missing)
  with pytest.raises(data.DatasetNotPreparedError, match=re.escape(
      f"Dataset '{name}' is not prepared in {remote_dir}: run `python -m nonlocal_jax.data.prepare {name} "
      f'--data_dir={remote_dir}` first.')):
    builders.check_prepared(name, remote_dir)
  # Kinetics is decoded on a local disk (videos, resumable cache), so the command prepares it there and copies it.
  with pytest.raises(data.DatasetNotPreparedError, match=re.escape(
      '`python -m nonlocal_jax.data.prepare kinetics400 --videos=DIR --annotations=DIR --data_dir=LOCAL_DIR && '
      f'gsutil -m rsync -r LOCAL_DIR {remote_dir}` first.')):
    builders.check_prepared('kinetics400', remote_dir)
  with pytest.raises(ValueError, match=r'Kinetics is prepared on a local disk, not in gs://b/tfds: pass a local '
                                       r'--data_dir, then copy it with `gsutil -m rsync -r LOCAL_DIR gs://b/tfds`\.'):
    prepare.prepare_kinetics('kinetics400', 'videos', 'annotations', 'gs://b/tfds')


def test_class_names_of_the_synthetic_tasks(synthetic_prepared, tmp_path):
  # The prepared same_different set stores plain numbers (label 1: same class); the names come from the task.
  c = synthetic_config(synthetic_prepared)
  assert data.class_names(c) == ('different', 'same')
  assert data.num_classes(c) == 2
  sum_mod10 = tfds.builder('synthetic_long_range', config=synthetic.synthetic_config('sum_mod10', size=24),
                           data_dir=str(tmp_path))
  assert builders.class_names(None, sum_mod10) == tuple('0123456789')


def test_class_names_are_the_datasets_own_or_none(tmp_path):
  with tfds.testing.mock_data(num_examples=1):
    names = data.class_names(small_video_config(name='ucf101'))
  assert len(names) == 101 and names[:2] == ('ApplyEyeMakeup', 'ApplyLipstick')
  # MNIST's labels are numbered only ('0'..'9' as TFDS names them): nothing for a plot to show beyond the index.
  assert builders.class_names(None, tfds.builder('mnist', data_dir=str(tmp_path))) is None
