"""The safetensors format, written and read with NumPy alone (no ``safetensors`` package needed).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian unsigned header length N, then N
bytes of UTF-8 JSON ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, then the tensors' raw little-endian C-order bytes, back to back; offsets count from the end of the
header. Nothing in a safetensors file is code, so reading one cannot run anything; the reader checks every offset
and size before it takes any bytes, and refuses a file that is not exactly this layout in one sentence.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Mapping, Optional

import ml_dtypes
import numpy as np

from nonlocal_jax import paths

# safetensors dtype names <-> NumPy dtypes (little-endian).
DTYPES = {
    'BOOL': np.dtype('bool'), 'U8': np.dtype('u1'), 'I8': np.dtype('i1'), 'U16': np.dtype('<u2'),
    'I16': np.dtype('<i2'), 'U32': np.dtype('<u4'), 'I32': np.dtype('<i4'), 'U64': np.dtype('<u8'),
    'I64': np.dtype('<i8'), 'F16': np.dtype('<f2'), 'BF16': np.dtype(ml_dtypes.bfloat16), 'F32': np.dtype('<f4'),
    'F64': np.dtype('<f8'),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# The reference implementation refuses larger headers: a header length beyond it means a damaged file.
MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
  """The bytes are not a well-formed safetensors file."""


def dumps(tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None) -> bytes:
  """The safetensors bytes of ``{name: array}`` (names sorted; ``metadata``: string pairs kept in the header)."""
  header, chunks, offset = {}, [], 0
  for name in sorted(tensors):
    array = np.asarray(tensors[name])
    dtype = array.dtype.newbyteorder('<') if array.dtype.byteorder == '>' else array.dtype
    if dtype not in _NAMES:
      raise ValueError(f'Tensor {name} has dtype {array.dtype}, which safetensors cannot hold: cast it to one of '
                       f'{sorted(DTYPES)}.')
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    header[name] = {'dtype': _NAMES[dtype], 'shape': list(array.shape), 'data_offsets': [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  if metadata:
    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
  text = json.dumps(header, separators=(',', ':')).encode('utf-8')
  # Padded with spaces to a multiple of 8, as the reference writer does, so the data starts aligned.
  text += b' ' * (-len(text) % 8)
  return struct.pack('<Q', len(text)) + text + b''.join(chunks)


def loads(data: bytes, source: str = 'The data') -> Dict[str, np.ndarray]:
  """``{name: array}`` from safetensors bytes; raises SafetensorsError naming ``source`` if they are malformed."""
  def bad(what: str) -> SafetensorsError:
    return SafetensorsError(f'{source} is not a valid safetensors file ({what}): export it again or give another '
                            'file.')

  if len(data) < 8:
    raise bad('shorter than its 8-byte header length')
  (size,) = struct.unpack('<Q', data[:8])
  if size > MAX_HEADER or 8 + size > len(data):
    raise bad(f'a header of {size} bytes in a file of {len(data)}')
  try:
    header = json.loads(data[8:8 + size].decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise bad(f'its header is not JSON: {e}') from None
  if not isinstance(header, dict):
    raise bad('its header is not a JSON object')
  header.pop('__metadata__', None)
  buffer = memoryview(data)[8 + size:]
  tensors, spans = {}, []
  for name, info in header.items():
    try:
      dtype = DTYPES[info['dtype']]
      shape = tuple(int(s) for s in info['shape'])
      begin, end = (int(o) for o in info['data_offsets'])
    except (KeyError, TypeError, ValueError):
      raise bad(f'tensor {name} has no valid dtype, shape and data_offsets') from None
    if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(buffer):
      raise bad(f'tensor {name} has shape {list(shape)} and data_offsets {[begin, end]} in {len(buffer)} data bytes')
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise bad(f'tensor {name} of shape {list(shape)} {info["dtype"]} has {end - begin} bytes')
    spans.append((begin, end))
    # A copy: the arrays must not keep the whole file alive, and are writable.
    tensors[name] = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape).copy()
  # The data is the tensors back to back, nothing more: a hole or an overlap means the file was damaged.
  position = 0
  for begin, end in sorted(spans):
    if begin != position:
      raise bad('its tensors overlap or leave gaps in the data')
    position = end
  if position != len(buffer):
    raise bad(f'{len(buffer) - position} bytes after the last tensor')
  return tensors


def save(tensors: Mapping[str, np.ndarray], path: paths.PathLike,
         metadata: Optional[Mapping[str, str]] = None) -> None:
  """Writes ``{name: array}`` as a safetensors file at ``path`` (local or remote), atomically."""
  paths.write_atomic(paths.expand(path), dumps(tensors, metadata))


def load(path: paths.PathLike) -> Dict[str, np.ndarray]:
  """``{name: array}`` from the safetensors file at ``path``."""
  return loads(paths.expand(path).read_bytes(), str(path))
