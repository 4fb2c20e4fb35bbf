"""A serialized ``tf.train.Example`` split without parsing its frames: where each frame's bytes lie, and the rest.

A Kinetics record holds every stored frame of its video (10 s at 30 fps: about 300 JPEGs, 17 MB), and a training
clip needs 32 of them. Parsing the whole message copies all 17 MB (and reading it reads them all); this module
walks the protocol-buffer wire format instead, touching only the few bytes of each field's header, and returns
where each value of one bytes feature (the frames) lies, plus the other features re-serialised as a small Example
for the protobuf parser. Over a memory-mapped shard only the frames a clip uses are then copied.

The wire format (protobuf's encoding, which ``tf.train.Example`` follows): a field is a varint key
(number << 3 | wire type) and then a varint (type 0), 8 bytes (1), a varint length and that many bytes (2) or 4
bytes (5). ``Example`` = {1: Features}; ``Features`` = repeated {1: map entry {1: key, 2: Feature}};
``Feature`` = {1: BytesList, 2: FloatList, 3: Int64List}; ``BytesList`` = repeated {1: bytes}.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class WireError(ValueError):
  """The bytes are not the Example the walk expects (the caller parses the whole message instead)."""


def _varint(buffer, position: int, end: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    if position >= end or shift > 63:
      raise WireError('a varint runs past its message')
    byte = buffer[position]
    position += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, position
    shift += 7


def _fields(buffer, start: int, end: int):
  """(field number, wire type, value start, value end) of each field of the message in [start, end)."""
  position = start
  while position < end:
    key, position = _varint(buffer, position, end)
    number, wire_type = key >> 3, key & 7
    if wire_type == 0:
      _, after = _varint(buffer, position, end)
    elif wire_type == 2:
      length, position = _varint(buffer, position, end)
      after = position + length
    elif wire_type in (1, 5):
      after = position + (8 if wire_type == 1 else 4)
    else:
      raise WireError(f'wire type {wire_type} is not used by tf.train.Example')
    if after > end:
      raise WireError('a field runs past its message')
    yield number, wire_type, position, after
    position = after


def _encode_varint(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def split(buffer, start: int, end: int, key: str) -> tuple[bytes, np.ndarray]:
  """Splits the serialized Example in ``buffer[start:end]`` (bytes, or a memory map) around the bytes feature
  ``key``: returns (an Example holding every other feature, serialized; int64 (n, 2) (offset, length) in
  ``buffer`` of each of ``key``'s values, in order). Raises WireError where the bytes are not such an Example."""
  wanted = key.encode()
  entries, spans, found = [], [], False
  for number, wire_type, value_start, value_end in _fields(buffer, start, end):
    if number != 1 or wire_type != 2:
      continue  # Example has no other field; an unknown one is skipped as the parser would.
    for f_number, f_type, entry_start, entry_end in _fields(buffer, value_start, value_end):
      if f_number != 1 or f_type != 2:
        continue
      name, feature = None, None
      for e_number, e_type, s, e in _fields(buffer, entry_start, entry_end):
        if e_type == 2 and e_number == 1:
          name = bytes(buffer[s:e])
        elif e_type == 2 and e_number == 2:
          feature = (s, e)
      if name != wanted:
        entries.append(b'\x0a' + _encode_varint(entry_end - entry_start) + bytes(buffer[entry_start:entry_end]))
        continue
      found = True
      for l_number, l_type, list_start, list_end in _fields(buffer, *feature) if feature else ():
        if l_number != 1 or l_type != 2:
          raise WireError(f'feature {key!r} is not a bytes list')
        spans += [(s, e - s) for v_number, v_type, s, e in _fields(buffer, list_start, list_end)
                  if v_number == 1 and v_type == 2]
  if not found:
    raise WireError(f'the example has no feature {key!r}')
  features = b''.join(entries)
  rest = b'\x0a' + _encode_varint(len(features)) + features
  return rest, np.asarray(spans, np.int64).reshape(-1, 2)


class Values(Sequence[bytes]):
  """The values of one bytes feature, each copied out of its buffer only when asked for."""

  def __init__(self, buffer, spans: np.ndarray):
    self._buffer, self._spans = buffer, spans

  def __len__(self) -> int:
    return len(self._spans)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    offset, length = self._spans[i]
    return bytes(self._buffer[int(offset):int(offset) + int(length)])
