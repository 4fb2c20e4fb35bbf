"""Exchange of the evaluation's per-video totals between processes, bit-exact, over one all-gather function.

Multi-host: each process evaluates its own videos; ``exchange`` hands every process the totals of all of them
(``jax.experimental.multihost_utils.process_allgather`` by default), so that every process computes the same
global result. Errors in one process's data travel in the same exchange and are raised on every process, so no
process is left waiting in a collective the others never reach.

What travels, all as uint32 words (``process_allgather`` without ``jax_enable_x64`` would round float64 and int64
to 32 bits): first a header per process (rows, views, top-1 and top-5 counts, length of its error message); then
either the error messages, or one table per process, padded to the longest, of per-video rows (pooled class
probabilities: sums or maxima, view count, label: a class or a multi-hot row, integer video id). Two calls of the
gather when all goes well.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from jax.experimental import multihost_utils
import numpy as np

# The all-gather between processes: x -> (process_count, *x.shape), for a uint32 array of the same shape on every
# process.
Gather = Callable[[np.ndarray], np.ndarray]

# Header fields, in order.
_ROWS, _VIEWS, _TOP1, _TOP5, _ERROR_LENGTH = range(5)


def process_allgather(x: np.ndarray) -> np.ndarray:
  """``x`` of every process stacked on a new leading axis, (process_count, *x.shape); a collective."""
  return np.asarray(multihost_utils.process_allgather(x))


@dataclasses.dataclass
class Share:
  """What one process has accumulated: one row per video it saw, its view counters, and its first data error.

  Attributes:
    ids: (n,) int64 video ids.
    sums: (n, num_classes) float64 class probabilities of each video's views, pooled: their sums (mean pooling)
      or maxima (max pooling).
    counts: (n,) int64 views of each video.
    labels: (n,) int64 true class of each video; multi-label: (n, num_classes) int64 multi-hot rows.
    views: views accumulated (one per unmasked row).
    top1: views whose true class is top-1 (``metrics.top_k_correct``); multi-label: hit@1 (``top_k_hit``).
    top5: views whose true class is top-5; multi-label: hit@5.
    error: the first problem found in this process's data ('' when none).
  """
  ids: np.ndarray
  sums: np.ndarray
  counts: np.ndarray
  labels: np.ndarray
  views: int
  top1: int
  top5: int
  error: str = ''


def exchange(share: Share, gather: Gather) -> list[Share]:
  """The shares of all processes, in process order; a collective that every process must call.

  Raises:
    ValueError: on every process alike, when any process reports an error (the message names each such process
      and its error), or when ``gather`` does not stack its inputs on a new leading axis.
  """
  error = share.error.encode()
  header = np.array([len(share.ids), share.views, share.top1, share.top5, len(error)], np.int64)
  headers = _all(gather, _words(header)).view(np.int64)
  if headers[:, _ERROR_LENGTH].any():
    # Every process sees the same headers, so all of them take this branch and raise together.
    messages = _all(gather, _words(_padded_bytes(error, int(headers[:, _ERROR_LENGTH].max()))))
    raise ValueError('; '.join(f'process {p}: {_text(m)}' for p, m in enumerate(messages)
                               if headers[p, _ERROR_LENGTH]))
  c = share.sums.shape[1]
  # Every process evaluates the same dataset, so all send labels of the same width.
  labels = share.labels[:, None] if share.labels.ndim == 1 else share.labels
  w = labels.shape[1]
  table = np.concatenate([_words(share.sums), _words(share.counts[:, None]), _words(labels),
                          _words(share.ids[:, None])], axis=1)
  capacity = max(int(headers[:, _ROWS].max()), 1)  # Every process sends the same shape; never an empty array.
  table = np.concatenate([table, np.zeros((capacity - len(table), table.shape[1]), np.uint32)])
  shares = []
  for p, rows in enumerate(_all(gather, table)):
    rows = rows[:headers[p, _ROWS]]
    shares.append(Share(ids=_column(rows, 2 * (c + w) + 2, 2 * (c + w) + 4, np.int64)[:, 0],
                        sums=_column(rows, 0, 2 * c, np.float64),
                        counts=_column(rows, 2 * c, 2 * c + 2, np.int64)[:, 0],
                        labels=_labels(_column(rows, 2 * c + 2, 2 * (c + w) + 2, np.int64), share.labels.ndim),
                        views=int(headers[p, _VIEWS]), top1=int(headers[p, _TOP1]), top5=int(headers[p, _TOP5])))
  return shares


def _column(rows: np.ndarray, start: int, stop: int, dtype) -> np.ndarray:
  # Words start:stop of every row, read back as the type they were written from.
  return np.ascontiguousarray(rows[:, start:stop]).view(dtype)


def _labels(columns: np.ndarray, ndim: int) -> np.ndarray:
  # Classes come back as (n,), multi-hot rows as (n, num_classes).
  return columns if ndim == 2 else columns[:, 0]


def _all(gather: Gather, x: np.ndarray) -> np.ndarray:
  out = np.ascontiguousarray(gather(x))
  if out.ndim != x.ndim + 1 or out.shape[1:] != x.shape:
    raise ValueError(f'The gather function returned shape {out.shape} for an input of shape {x.shape}: it '
                     'must stack the arrays of all processes on a new leading axis.')
  return out


def _words(x: np.ndarray) -> np.ndarray:
  # Bit-exact as uint32 (see the module docstring).
  x = np.ascontiguousarray(x)
  return x.view(np.uint32) if x.ndim else x.reshape(1).view(np.uint32)


def _text(words: np.ndarray) -> str:
  return bytes(words.view(np.uint8)).rstrip(b'\0').decode(errors='replace')


def _padded_bytes(data: bytes, width: int) -> np.ndarray:
  out = np.zeros(-(-width // 4) * 4, np.uint8)  # Whole uint32 words.
  out[:len(data)] = np.frombuffer(data, np.uint8)
  return out


__all__ = ['Gather', 'Share', 'exchange', 'process_allgather']
