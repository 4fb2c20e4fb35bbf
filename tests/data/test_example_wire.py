"""The wire walk of a serialized tf.train.Example against protobuf's own parser, and a split's frames read through
it (local memory map and a ram:// stand-in for gs://) against whole-record parsing."""

import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2

from nonlocal_jax.data import example_wire
from nonlocal_jax.data import records
from tests.data.test_records import _builder


def _example(rng, num_frames, video_first):
  # Frames of random lengths: empty, one byte, and sizes whose length varint takes 1, 2 and 3 bytes.
  sizes = rng.choice([0, 1, 100, 127, 128, 5000, 70000], size=num_frames)
  frames = [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in sizes]
  example = example_pb2.Example()
  features = example.features.feature
  others = [('label', lambda f: f.int64_list.value.extend([3, 300, 2**40])),
            ('frame_rate', lambda f: f.float_list.value.append(29.97)),
            ('id', lambda f: f.bytes_list.value.append(b'abc'))]
  if video_first:
    features['video'].bytes_list.value.extend(frames)
  for name, fill in others:
    fill(features[name])
  if not video_first:
    features['video'].bytes_list.value.extend(frames)
  return example, frames


@pytest.mark.parametrize('num_frames, video_first, prefix', [(0, True, 0), (1, False, 7), (40, True, 3),
                                                             (40, False, 0)])
def test_split_finds_every_frame_and_keeps_every_other_feature(num_frames, video_first, prefix):
  rng = np.random.default_rng(num_frames + prefix)
  example, frames = _example(rng, num_frames, video_first)
  data = example.SerializeToString()
  buffer = b'\xff' * prefix + data + b'\xfe' * 5  # The record inside a larger buffer, as in a shard.
  rest, spans = example_wire.split(buffer, prefix, prefix + len(data), 'video')
  values = example_wire.Values(buffer, spans)
  assert len(values) == num_frames and list(values) == frames  # protobuf's own values, in order.
  assert values[1:3] == frames[1:3]
  parsed = example_pb2.Example.FromString(rest)
  expected = example_pb2.Example()
  expected.CopyFrom(example)
  del expected.features.feature['video']
  assert parsed == expected


def test_split_refuses_what_it_cannot_walk():
  example, _ = _example(np.random.default_rng(0), 3, True)
  data = example.SerializeToString()
  with pytest.raises(example_wire.WireError, match='runs past'):
    example_wire.split(data, 0, len(data) - 10, 'video')  # Truncated.
  with pytest.raises(example_wire.WireError, match="no feature 'image'"):
    example_wire.split(data, 0, len(data), 'image')
  with pytest.raises(example_wire.WireError, match="'label' is not a bytes list"):
    example_wire.split(data, 0, len(data), 'label')


def test_a_splits_frames_read_through_the_walk_equal_whole_record_parsing(synthetic_prepared, remote_dir):
  builder = _builder(synthetic_prepared)
  source = records.open_split(builder, 'test')
  # The same shards on a remote file system, where a record is read whole and walked in memory.
  remote_files = []
  for instruction in builder.info.splits['test'].file_instructions:
    target = f'{remote_dir}/{instruction.filename.rsplit("/", 1)[1]}'
    tf.io.gfile.copy(instruction.filename, target)
    remote_files.append(types.SimpleNamespace(filename=target, examples_in_shard=instruction.examples_in_shard,
                                              skip=instruction.skip, take=instruction.take))
  remote = records.Source(remote_files)
  for i in range(len(source)):
    whole = source.example(i)
    for s in (source, remote):
      rest, frames = s.example_and_values(i, 'video')
      assert list(frames) == list(whole.features.feature['video'].bytes_list.value)
      assert rest.features.feature['label'] == whole.features.feature['label']
  # An example without the feature falls back to parsing the whole record (and gives no frame).
  rest, frames = source.example_and_values(0, 'no_such_feature')
  assert len(frames) == 0 and rest == source.example(0)
