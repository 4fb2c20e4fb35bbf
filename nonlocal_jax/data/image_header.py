"""The height and width of an encoded JPEG or PNG frame, read from its header without decoding it.

The clip's geometry (scale, crop, the source window to decode) is planned before any pixel is decoded, so that
only the window is decoded (``nonlocal_jax.data.transforms``).
"""

from __future__ import annotations

import struct

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Start-of-frame markers: baseline, extended, progressive, lossless, arithmetic (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class UnknownImageFormat(ValueError):
  """The bytes are neither a JPEG nor a PNG whose header gives its size."""


def frame_size(data: bytes) -> tuple[int, int]:
  """(height, width) of the JPEG or PNG image ``data``; raises UnknownImageFormat for anything else."""
  if data[:8] == _PNG_SIGNATURE and len(data) >= 24:
    width, height = struct.unpack('>II', data[16:24])
    return int(height), int(width)
  if data[:2] == b'\xff\xd8':
    return _jpeg_size(data)
  raise UnknownImageFormat('A stored frame is neither JPEG nor PNG: prepare the dataset with JPEG or PNG frames.')


def is_jpeg(data: bytes) -> bool:
  """Whether ``data`` starts like a JPEG file."""
  return data[:2] == b'\xff\xd8'


def _jpeg_size(data: bytes) -> tuple[int, int]:
  position = 2
  while position + 4 <= len(data):
    if data[position] != 0xFF:
      position += 1  # Fill bytes between segments.
      continue
    marker = data[position + 1]
    if marker == 0xFF:
      position += 1
      continue
    if marker in (0x01,) or 0xD0 <= marker <= 0xD9:  # Markers without a length.
      position += 2
      continue
    length = struct.unpack('>H', data[position + 2:position + 4])[0]
    if marker in _SOF_MARKERS:
      height, width = struct.unpack('>HH', data[position + 5:position + 9])
      return int(height), int(width)
    position += 2 + length
  raise UnknownImageFormat('A stored JPEG frame has no start-of-frame header: prepare the dataset again.')
