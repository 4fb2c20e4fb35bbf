"""Where the training loop's scalars go: TensorBoard event files in the workdir and the library log.

Where clu's metric writers import (they need TensorFlow), its default writer does it, as it always has. A host
without TensorFlow (a GPU machine with JAX alone, measuring fake-data throughput) gets ``EventWriter``: the same
scalars, written with TensorBoard's own event-file writer, which needs no TensorFlow, and logged.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Mapping

from absl import logging
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


@functools.cache
def clu_writers():
  """clu's ``metric_writers`` module, None where it cannot import (it imports TensorFlow at its top, absent on
  throughput-only hosts); imported at the first writer, so that importing the training package (the sweep's
  command line printing commands or collecting results) does not load TensorFlow."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return metric_writers


class EventWriter:
  """Scalars to the log and (unless ``workdir`` is None) to TensorBoard event files in ``workdir``; the part of
  clu's ``MetricWriter`` interface the loop uses."""

  def __init__(self, workdir: str | None):
    self._events = EventFileWriter(os.fspath(workdir)) if workdir is not None else None

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs ``scalars`` and appends them to the event file, at ``step``."""
    logging.info('[%d] %s', step, ', '.join(f'{k}={v}' for k, v in sorted(scalars.items())))
    if self._events is not None:
      values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
      self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                             summary=summary_pb2.Summary(value=values)))

  def flush(self) -> None:
    """Writes what is buffered to disk."""
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    """Flushes and closes the event file."""
    if self._events is not None:
      self._events.close()


def create(workdir: str, *, just_logging: bool = False):
  """The loop's writer: clu's default writer where it imports, else an ``EventWriter`` (same files, no TF)."""
  writers = clu_writers()
  if writers is not None:
    return writers.create_default_writer(workdir, just_logging=just_logging)
  return EventWriter(None if just_logging else workdir)
