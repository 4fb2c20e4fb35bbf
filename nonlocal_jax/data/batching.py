"""Batches that the worker threads fill row by row, handed to the consumer in order.

A pipeline's batch is mostly one large uint8 array of views. Copying each view into it on the consumer's thread
makes that one thread the limit of a many-core host (a 32×224² clip is 4.8 MB; a test video's 30 views of 256²
are 190 MB), so the workers write their own rows instead: the copies run in parallel, and NumPy releases the GIL
while it copies.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np


class RowBatches:
  """Stream position p is row ``p % size`` of batch ``p // size``; each batch is made (zeroed, by ``make``) when
  its first row is written.

  Workers call ``row`` for each position once, from any thread; the consumer calls ``take(b)`` once every row of
  batch b has been written (or will never be: the rows left are ``make``'s, e.g. masked padding), so nothing writes
  into a batch after it is handed out. Only the batches begun and not yet taken are held.
  """

  def __init__(self, size: int, make: Callable[[], dict[str, np.ndarray]]):
    self.size = size
    self._make = make
    self._open: dict[int, dict[str, np.ndarray]] = {}
    self._lock = threading.Lock()

  def row(self, position: int) -> tuple[dict[str, np.ndarray], int]:
    """(the arrays of the batch that holds stream position ``position``, the row in them)."""
    batch, row = divmod(position, self.size)
    with self._lock:
      arrays = self._open.get(batch)
      if arrays is None:
        arrays = self._open[batch] = self._make()
    return arrays, row

  def take(self, batch: int) -> dict[str, np.ndarray]:
    """Batch ``batch``, no longer held here (a new one from ``make`` if no row of it was written)."""
    with self._lock:
      arrays = self._open.pop(batch, None)
    return arrays if arrays is not None else self._make()
