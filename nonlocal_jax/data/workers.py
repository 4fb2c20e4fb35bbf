"""Worker threads that produce a stream's items in order, a bounded number ahead of the consumer.

The pipelines' per-item work (reading a record, decoding a window of each frame, resizing) runs in TensorFlow
kernels and ``os.pread``, which release the GIL, so threads use all cores without the start-up, memory and
copying cost of worker processes. Items come out in input order whatever the number of threads, so a stream's
content never depends on it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import sys
from typing import Callable, Iterable, Iterator, TypeVar

In = TypeVar('In')
Out = TypeVar('Out')


def default_workers() -> int:
  """Threads when ``config.data.num_workers`` is 0: the cores this process may use."""
  try:
    return max(len(os.sched_getaffinity(0)), 1)
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


def ordered_map(fn: Callable[[In], Out], items: Iterable[In], workers: int, ahead: int, *,
                _is_finalizing: Callable[[], bool] = sys.is_finalizing) -> Iterator[Out]:
  """``fn(item)`` for each item, in order, computed by ``workers`` threads at most ``ahead`` items in advance.

  Memory is bounded by ``ahead`` results. An exception in ``fn`` is raised at its item's place in the stream.
  Closing the iterator (or dropping it) cancels the work not yet started.
  """
  if workers <= 1:
    yield from map(fn, items)
    return
  items = iter(items)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix='pipeline')
  pending = collections.deque()
  try:
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= ahead:
        break
    while pending:
      result = pending.popleft().result()
      for item in items:
        pending.append(pool.submit(fn, item))
        break
      yield result
  finally:
    for future in pending:
      future.cancel()
    # A stream dropped at interpreter exit: the threads end with the interpreter. (By then the module's globals
    # may be None, ``sys`` among them, so the check is bound when the function is defined.)
    if not _is_finalizing():
      pool.shutdown(wait=False, cancel_futures=True)
