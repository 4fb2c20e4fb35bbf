"""Random access to the examples of a prepared split: record i of a split is read in O(1), on any file system.

TFDS prepares a split as TFRecord shards, which are sequential: without help, reaching example k means reading the
k examples before it (a Kinetics run resumed at step 300k would re-read terabytes). Every TFRecord record is framed
as ``length (uint64) | crc (uint32) | data | crc (uint32)``, so one pass over the frames' headers, seeking over the
data, gives each record's byte offset; reading record i is then one positioned read. That offset index is built
once per shard, the first time the shard is read, and kept beside it (``offsets/<shard>.npy``; in memory if the
dataset's folder is read-only). It covers local disks and every file system TensorFlow reads (``gs://``), which
the open-source ArrayRecord reader does not (docs/input_pipeline.md explains the choice).

Nothing here decodes: a read returns the serialized ``tf.train.Example``; ``Source.example`` parses it, and
``Source.example_and_values`` parses all but one bytes feature (the frames), whose values it copies out only when
asked for (``example_wire``): a clip then reads the 32 frames it uses, not the video's 300. Local shards are
memory-mapped for that; a ``gs://`` record is read whole.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
import struct
import threading
from typing import Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2

from nonlocal_jax import paths
from nonlocal_jax.data import example_wire

_log = logging.getLogger(__name__)

_HEADER = 12  # uint64 length + uint32 masked CRC of the length.
_FOOTER = 4  # uint32 masked CRC of the data.


class DamagedShardError(RuntimeError):
  """A shard's records do not frame as TFRecord, or it holds another count of examples than its dataset says."""


def index_path(shard: str) -> str:
  """Where the offset index of ``shard`` is kept: ``offsets/<shard's name>.npy`` beside it."""
  folder, name = str(shard).rsplit('/', 1) if '/' in str(shard) else ('.', str(shard))
  return f'{folder}/offsets/{name}.npy'


def build_index(shard: str) -> np.ndarray:
  """(offset, length) of every record of the TFRecord file ``shard``, int64 (n, 2), reading only the headers."""
  rows = []
  with _open(shard) as f:
    size = _size(f)
    position = 0
    while position < size:
      f.seek(position)
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise DamagedShardError(f'{shard} ends inside a record header at byte {position}: prepare the dataset again.')
      length = struct.unpack('<Q', header[:8])[0]
      rows.append((position + _HEADER, length))
      position += _HEADER + length + _FOOTER
    if position != size:
      raise DamagedShardError(f'{shard} ends inside a record at byte {size}: prepare the dataset again.')
  return np.asarray(rows, np.int64).reshape(-1, 2)


def load_index(shard: str, num_records: int) -> np.ndarray:
  """The offset index of ``shard`` (built and saved beside it if absent or stale), checked to hold ``num_records``."""
  path = index_path(shard)
  index = None
  if paths.expand(path).exists():
    try:
      with paths.expand(path).open('rb') as f:
        index = np.load(f, allow_pickle=False)
    except (ValueError, OSError) as e:
      _log.warning('Rebuilding the damaged offset index %s (%s).', path, e)
  if index is None or index.shape != (num_records, 2):
    index = build_index(shard)
    if len(index) != num_records:
      raise DamagedShardError(f'{shard} holds {len(index)} records where its dataset says {num_records}: prepare '
                              'the dataset again.')
    try:
      paths.expand(path).parent.mkdir(parents=True, exist_ok=True)
      paths.write_atomic(path, _npy_bytes(index))
    except paths.errors(path) as e:  # A read-only dataset folder: keep the index in memory for this run.
      _log.info('Offset index of %s kept in memory only (%s).', shard, paths.describe_error(e))
  return index


class Source:
  """The records of one split (or a slice of it, e.g. 'train[:10%]'), read by position.

  Attributes:
    num_examples: records in the split (or slice).
    reads: records read so far (tests count them).
  """

  def __init__(self, file_instructions: Sequence):
    """``file_instructions``: TFDS's ``builder.info.splits[split].file_instructions`` (file, skip, take, size)."""
    files, shard_of, rows = [], [], []
    for instruction in file_instructions:
      index = load_index(instruction.filename, instruction.examples_in_shard)
      take = instruction.take if instruction.take >= 0 else len(index) - instruction.skip
      taken = index[instruction.skip:instruction.skip + take]
      shard_of.append(np.full(len(taken), len(files), np.int32))
      files.append(instruction.filename)
      rows.append(taken)
    self._files = files
    self._shard = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
    self._rows = np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)
    self._local = threading.local()
    self._lock = threading.Lock()
    self._maps: dict[int, mmap.mmap] = {}  # Local shards, memory-mapped once and read by every thread.
    self.num_examples = len(self._rows)
    self.reads = 0

  def __len__(self) -> int:
    return self.num_examples

  def read(self, i: int) -> bytes:
    """The serialized example at position ``i`` of the split."""
    offset, length = self._rows[i]
    data = self._handle(int(self._shard[i])).read_at(int(offset), int(length))
    with self._lock:
      self.reads += 1
    return data

  def example(self, i: int):
    """The ``tf.train.Example`` at position ``i`` (its features are read lazily by the caller)."""
    return example_pb2.Example.FromString(self.read(i))

  def example_and_values(self, i: int, key: str):
    """(the ``tf.train.Example`` at position ``i`` without its bytes feature ``key``, ``key``'s values as a
    sequence of bytes, each read when indexed). An example the wire walk does not understand is parsed whole."""
    offset, length = (int(v) for v in self._rows[i])
    shard = int(self._shard[i])
    buffer, start = self._mapped(shard), offset
    if buffer is None:
      buffer, start = self._handle(shard).read_at(offset, length), 0
    elif offset + length > len(buffer):
      raise DamagedShardError(f'{self._files[shard]} is shorter than its offset index says: prepare the dataset '
                              'again.')
    with self._lock:
      self.reads += 1
    try:
      rest, spans = example_wire.split(buffer, start, start + length, key)
    except example_wire.WireError:
      example = example_pb2.Example.FromString(bytes(buffer[start:start + length]))
      feature = example.features.feature
      return example, (feature[key].bytes_list.value if key in feature else [])  # Indexing would add the key.
    return example_pb2.Example.FromString(rest), example_wire.Values(buffer, spans)

  def _mapped(self, shard: int):
    """The memory map of a local shard (None for a remote one)."""
    if paths.is_remote(self._files[shard]):
      return None
    with self._lock:
      if shard not in self._maps:
        with open(self._files[shard], 'rb') as f:
          self._maps[shard] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
      return self._maps[shard]

  def _handle(self, shard: int) -> '_Reader':
    # One handle per thread and shard: positioned reads from several threads never share a file position.
    handles = self._local.__dict__.setdefault('handles', {})
    if shard not in handles:
      handles[shard] = _Reader(self._files[shard])
    return handles[shard]


class _Reader:
  """Positioned reads of one file: ``os.pread`` on a local disk (no GIL, no shared position), else a file object."""

  def __init__(self, path: str):
    self._path = path
    if paths.is_remote(path):
      self._fd = None
      self._file = tf.io.gfile.GFile(path, 'rb')
    else:
      self._fd = os.open(path, os.O_RDONLY)
      self._file = None

  def read_at(self, offset: int, length: int) -> bytes:
    if self._fd is not None:
      data = os.pread(self._fd, length, offset)
    else:
      self._file.seek(offset)
      data = self._file.read(length)
    if len(data) != length:
      raise DamagedShardError(f'{self._path} is shorter than its offset index says: prepare the dataset again.')
    return data

  def __del__(self, _close=os.close):  # os may be gone when the interpreter shuts down.
    if getattr(self, '_fd', None) is not None:
      _close(self._fd)


def _open(path: str):
  return tf.io.gfile.GFile(path, 'rb') if paths.is_remote(path) else open(path, 'rb')


def _size(f) -> int:
  f.seek(0, os.SEEK_END)
  return f.tell()


def _npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  return buffer.getvalue()


def open_split(builder, split: str) -> Source:
  """The random-access ``Source`` of ``split`` (e.g. 'train' or 'train[:10%]') of a prepared TFDS ``builder``."""
  file_format = str(getattr(builder.info, 'file_format', 'tfrecord') or 'tfrecord').lower()
  if 'tfrecord' not in file_format:
    raise ValueError(f'{builder.name} was prepared as {file_format}, which this pipeline does not read: prepare it '
                     f'again with `python -m nonlocal_jax.data.prepare {builder.name}` (TFRecord, the default).')
  return Source(builder.info.splits[split].file_instructions)
