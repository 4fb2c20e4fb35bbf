"""Random access to a prepared split: the offset index against TensorFlow's own sequential TFRecord reader, slices
of a split, a damaged index (rebuilt) and a damaged shard (one sentence)."""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from nonlocal_jax.data import builders
from nonlocal_jax.data import records
from tests.data.conftest import synthetic_config


def _builder(prepared):
  c = synthetic_config(prepared)
  return builders.prepared_builder(c, [c.train_split])


def _tf_records(builder, split):
  # The independent reference: TensorFlow reads the split's shards sequentially.
  files = [i.filename for i in builder.info.splits[split].file_instructions]
  return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def test_preparation_indexes_every_split_and_reads_match_tensorflows_reader(synthetic_prepared):
  builder = _builder(synthetic_prepared)
  assert glob.glob(os.path.join(builder.data_dir, 'offsets', '*.npy'))  # Written by prepare.
  for split in ('train', 'test'):
    source = records.open_split(builder, split)
    expected = _tf_records(builder, split)
    assert len(source) == len(expected)
    order = np.random.default_rng(0).permutation(len(source))  # Random access, any order.
    for i in order:
      assert source.read(int(i)) == expected[i]
    assert source.reads == len(source)


def test_a_slice_of_a_split_reads_the_same_records(synthetic_prepared):
  builder = _builder(synthetic_prepared)
  source = records.open_split(builder, 'train[10:20]')
  expected = _tf_records(builder, 'train')[10:20]
  assert [source.read(i) for i in range(len(source))] == expected


def test_a_damaged_index_is_rebuilt_and_a_damaged_shard_is_one_sentence(synthetic_prepared, tmp_path):
  copy = tmp_path / 'copy'
  shutil.copytree(synthetic_prepared['data_dir'], copy)
  builder = _builder({'data_dir': str(copy)})
  shard = builder.info.splits['test'].file_instructions[0].filename
  index = records.index_path(shard)
  with open(index, 'wb') as f:
    f.write(b'not an index')
  source = records.open_split(builder, 'test')
  assert source.read(3) == _tf_records(builder, 'test')[3]
  assert np.load(index).shape == (len(source), 2)  # Rewritten whole.
  os.remove(index)
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) - 100)
  with pytest.raises(records.DamagedShardError, match='ends inside a record.*prepare the dataset again'):
    records.open_split(builder, 'test')
