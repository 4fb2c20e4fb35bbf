"""The console of the main job: lines for people on stderr, the libraries' logs in a file of the workdir.

``setup`` (main.py calls it once flags are parsed) gives the lines written with ``info`` (progress, start-up facts,
checkpoint saves, results) their own plain handler, and keeps what absl, TensorFlow, orbax, JAX, clu and TFDS log
at INFO off the console: those records wait in memory until ``log_to_workdir`` (the training start-up calls it once
the workdir is known to be writable) opens ``<workdir>/logs/main.log`` and writes them there. absl's own
``--verbosity`` flag brings them back: -2 (main.py's default) shows the libraries' errors on the console, -1 their
warnings too, 0 their INFO lines, 1 DEBUG. ``python -m nonlocal_jax.sweep`` sets it up the same way (one log file in
each run's workdir). Without ``setup`` (notebooks, tests) nothing changes: ``info`` lines go to the root logger
like any other log line and ``log_to_workdir`` does nothing.

Only process 0 of a multi-host run prints lines for people; every process writes its own log file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from typing import Iterator, Optional, TextIO

from absl import logging as absl_logging

from nonlocal_jax import paths

LOGGER_NAME = 'nonlocal_jax.console'
_logger = logging.getLogger(LOGGER_NAME)
_FILE_FORMAT = '%(asctime)s %(levelname).1s %(name)s %(filename)s:%(lineno)d] %(message)s'


class _Pending(logging.Handler):
  """Keeps the first ``capacity`` records until the log file is known (start-up logs before the workdir check)."""

  def __init__(self, capacity: int = 20_000):
    super().__init__()
    self.capacity = capacity
    self.records: list[logging.LogRecord] = []

  def emit(self, record: logging.LogRecord) -> None:
    if len(self.records) < self.capacity:
      self.records.append(record)


_handlers: dict[str, Optional[logging.Handler]] = {'stream': None, 'pending': None, 'file': None}


def info(message: str, *args) -> None:
  """Writes a line for people (printf-style ``args``, as in ``logging``)."""
  _logger.info(message, *args)


def format_duration(seconds: float) -> str:
  """A duration for people, to the nearest second: '4m05s', or '2h03m' from an hour on (negative counts as 0)."""
  s = int(round(max(seconds, 0)))
  return f'{s // 3600}h{s // 60 % 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def library_level(verbosity: int) -> int:
  """The Python logging level from which library records reach the console, for absl's ``--verbosity``."""
  if verbosity <= 1:
    return absl_logging.converter.absl_to_standard(verbosity)
  return logging.DEBUG - (verbosity - 1)  # absl's vlog levels.


def setup(verbosity: int = -2, stream: Optional[TextIO] = None) -> None:
  """Lines for people on ``stream`` (stderr), library records from ``library_level(verbosity)`` on the console.

  Every library record at INFO (or the verbosity's level, if lower) waits for ``log_to_workdir``. Calling it again
  replaces the earlier set-up.
  """
  absl_logging.use_absl_handler()
  _close(('stream', 'pending', 'file'))
  console_level = library_level(verbosity)
  absl_logging.get_absl_handler().setLevel(console_level)
  logging.root.setLevel(min(logging.INFO, console_level))
  logging.captureWarnings(True)  # Python warnings of the libraries are log records too (file, and console above).
  stream_handler = logging.StreamHandler(stream or sys.stderr)
  stream_handler.setFormatter(logging.Formatter('%(message)s'))
  pending = _Pending()
  _handlers.update(stream=stream_handler, pending=pending)
  _logger.addHandler(stream_handler)
  _logger.addHandler(pending)
  _logger.setLevel(logging.INFO)
  _logger.propagate = False  # The console has its own line; the root's handlers would repeat it.
  logging.root.addHandler(pending)
  # TensorFlow gives its logger a handler of its own when it is imported before this set-up (the sweep's CLI);
  # its records then go through the root like every other library's.
  tf_logger = logging.getLogger('tensorflow')
  for handler in list(tf_logger.handlers):
    tf_logger.removeHandler(handler)
  tf_logger.propagate = True


@contextlib.contextmanager
def native_stderr_to_log(what: str) -> Iterator[None]:
  """Meanwhile, what C++ libraries write to file descriptor 2 (TensorFlow's start-up lines) becomes one log record.

  Those lines bypass Python's logging, so they cannot be routed otherwise; ``what`` names them in the record.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode(errors='replace').strip()
      if text:
        logging.getLogger('native').info('%s wrote to stderr:\n%s', what, text)


def current_log_file() -> Optional[str]:
  """The file ``log_to_workdir`` opened last, or None (no ``setup``, or no workdir yet)."""
  handler = _handlers['file']
  return handler.baseFilename if handler is not None else None


def log_file_path(workdir: str, process_index: int = 0) -> str:
  """Where ``log_to_workdir`` writes: ``<workdir>/logs/main.log`` (``main.process<k>.log`` for process k > 0).

  A remote workdir (gs://) cannot be appended to line by line, so its log goes to the local temporary directory,
  ``<tmp>/nonlocal_jax_logs/<workdir's last folder>-<hash of the workdir>/``.
  """
  name = 'main.log' if process_index == 0 else f'main.process{process_index}.log'
  if paths.is_remote(workdir):
    tag = hashlib.sha1(os.fspath(workdir).encode()).hexdigest()[:8]
    folder = os.path.join(tempfile.gettempdir(), 'nonlocal_jax_logs',
                          f'{os.path.basename(os.fspath(workdir).rstrip("/")) or "run"}-{tag}')
  else:
    folder = os.path.join(os.fspath(paths.absolute(workdir)), 'logs')
  return os.path.join(folder, name)


def log_to_workdir(workdir: str, process_index: int = 0) -> Optional[str]:
  """After ``setup``: writes the waiting and all later records to ``log_file_path``; returns it (else None).

  A process other than 0 stops printing lines for people here.
  """
  if _handlers['stream'] is None:
    return None
  path = log_file_path(workdir, process_index)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  file_handler = logging.FileHandler(path, encoding='utf-8')
  file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
  file_handler.setLevel(logging.root.level)
  waiting = _handlers['pending'].records if _handlers['pending'] is not None else []
  _close(('pending', 'file'))
  for record in waiting:
    file_handler.handle(record)
  _handlers['file'] = file_handler
  logging.root.addHandler(file_handler)
  _logger.addHandler(file_handler)
  if process_index > 0:
    _close(('stream',))
  return path


def _close(names) -> None:
  for name in names:
    handler = _handlers[name]
    if handler is None:
      continue
    logging.root.removeHandler(handler)
    _logger.removeHandler(handler)
    if name != 'stream':  # The stream is stderr or the caller's: not ours to close.
      handler.close()
    _handlers[name] = None
