"""What the builders of a user's local video copy (Kinetics, Charades) share: their settings, the videos folder,
decoding a split on all cores with a tally of the videos skipped, and the report that lists them.

Decoding runs in a pool of worker processes (one per core by default) that exit when their parent dies, however it
dies. Each decoded video is cached as soon as it is done, so an interrupted preparation decodes only the videos it
had not reached. A missing, unreadable, corrupt or empty video is skipped, counted and reported; a preparation
never stops for one.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import logging
import math
import multiprocessing
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from nonlocal_jax.data import video_io

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov')
# Columns of a preparation's report of skipped videos (and, for Kinetics, skipped annotation rows).
REPORT_FIELDS = ('split', 'video_id', 'reason', 'detail', 'path')

_log = logging.getLogger(__name__)


class PreparationError(RuntimeError):
  """A preparation that would write nothing (no usable annotation row, or no video decoded); nothing is written."""


def check_settings(short_side, max_fps, jpeg_quality, num_workers) -> None:
  """Raises ValueError, one sentence naming the flag, for a setting no preparation can use; called before any work.

  ``short_side`` and ``max_fps`` may be None or 0 (keep the source's); ``num_workers`` None (one per core).
  """
  if short_side is not None and not (_is_int(short_side) and short_side >= 0):
    raise ValueError(f'--short_side is {short_side}: pass the shorter side of the stored frames in pixels, or 0 to '
                     'keep the source size.')
  if max_fps is not None and not (isinstance(max_fps, (int, float)) and math.isfinite(max_fps) and max_fps >= 0):
    raise ValueError(f'--max_fps is {max_fps}: pass the frame-rate cap in frames per second, or 0 to keep the '
                     'source rate.')
  if not (_is_int(jpeg_quality) and 1 <= jpeg_quality <= 100):
    raise ValueError(f'--jpeg_quality is {jpeg_quality}: pass a JPEG quality from 1 to 100 (90 by default).')
  if num_workers is not None and not (_is_int(num_workers) and num_workers >= 1):
    raise ValueError(f'--num_workers is {num_workers}: pass a number of decoding processes of 1 or more, or leave it '
                     'out for one per core.')


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def index_videos(videos_dir: str, what: str) -> dict[str, str]:
  """Maps each video file's stem to its path, searching ``videos_dir`` and its sub-folders.

  ``what`` names the videos in the error for a missing folder ('the Kinetics clips (flat or in class sub-folders)').
  """
  if not os.path.isdir(videos_dir):
    raise FileNotFoundError(f'No videos folder at {videos_dir}: pass --videos=DIR, the folder that holds {what}.')
  index = {}
  for root, _, files in os.walk(videos_dir):
    for name in files:
      stem, ext = os.path.splitext(name)
      if ext.lower() in VIDEO_EXTENSIONS:
        index.setdefault(stem, os.path.join(root, name))
  return index


def cache_file(cache_root: str, key: str) -> str:
  """Where the decoded video ``key`` is cached under ``cache_root``: hashed sub-folders keep directories small (the
  650k clips of Kinetics-700)."""
  return os.path.join(cache_root, hashlib.md5(key.encode()).hexdigest()[:2], key + '.pkl')


def write_report(path: str, rows: Sequence[dict]) -> str:
  """Writes ``rows`` (dicts of ``REPORT_FIELDS``) as the CSV report at ``path``; returns the path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(REPORT_FIELDS))
    writer.writeheader()
    writer.writerows(rows)
  return path


class DecodeTally:
  """Decodes the videos of each split and counts what happened, for the builder's report and the command's summary.

  Attributes:
    skipped: one dict per skipped video (``REPORT_FIELDS``).
    used: videos decoded, per split.
    total: videos asked for (annotation rows, duplicates included), per split.
    from_cache: videos taken from an earlier, interrupted run's cache, per split.
  """

  def __init__(self, short_side: Optional[int], max_fps: Optional[float], jpeg_quality: int, num_workers: int,
               use_cache: bool):
    self._settings = (short_side, max_fps, jpeg_quality)
    self._num_workers = num_workers
    self._use_cache = use_cache
    self.skipped: list[dict[str, str]] = []
    self.used: dict[str, int] = {}
    self.total: dict[str, int] = {}
    self.from_cache: dict[str, int] = {}

  def skip(self, split: str, key: str, reason: str, detail: str, path: str) -> None:
    """Records a skipped video."""
    self.skipped.append({'split': split, 'video_id': key, 'reason': reason, 'detail': detail, 'path': path})

  def decoded(self, split: str, videos: Sequence[tuple[str, Optional[str]]], cache_root: str
              ) -> Iterator[tuple[str, video_io.DecodedVideo]]:
    """Yields (key, decoded video) for each (key, path or None) of ``split`` that decodes, in the order they finish.

    A key seen twice is skipped as a duplicate; a video that does not decode is skipped with its reason.
    """
    seen = set()
    jobs = []
    for key, path in videos:
      if key in seen:
        self.skip(split, key, 'duplicate', 'the same clip appears twice in the annotations', '')
        continue
      seen.add(key)
      cache_path = cache_file(cache_root, key) if self._use_cache else None
      jobs.append(video_io.DecodeJob(key, path, *self._settings, cache_path))
    paths = {j.key: j.path or '' for j in jobs}
    self.total[split] = len(videos)
    self.used[split] = 0
    self.from_cache[split] = 0
    for result in decode_all(jobs, self._num_workers):
      if result.video is None:
        self.skip(split, result.key, result.reason, result.detail, paths[result.key])
        continue
      self.used[split] += 1
      self.from_cache[split] += int(result.from_cache)
      yield result.key, result.video


def decode_all(jobs: list[video_io.DecodeJob], num_workers: int) -> Iterator[video_io.DecodeResult]:
  """Decodes the jobs in ``num_workers`` processes and yields results as they finish (order not kept).

  At most a few jobs per worker are in flight, so memory stays bounded whatever the number of videos. If a
  worker process dies (a decoder crash inside FFmpeg), the videos it held are reported as unreadable and a new
  pool carries on with the rest.
  """
  if num_workers <= 1:
    for job in jobs:
      yield video_io.run_decode_job(job)
    return
  pending = list(reversed(jobs))
  while pending:
    retry = []
    finished = 0
    with _pool(num_workers) as pool:
      in_flight = {}
      while (pending or in_flight) and not retry:
        while pending and len(in_flight) < 4 * num_workers:
          job = pending.pop()
          in_flight[pool.submit(video_io.run_decode_job, job)] = job
        done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          job = in_flight.pop(future)
          try:
            result = future.result()
          except concurrent.futures.process.BrokenProcessPool:
            retry.append(job)
            continue
          finished += 1
          yield result
      retry.extend(in_flight.values())
    if retry and not finished:
      # The pool died before finishing anything: its processes could not start (typically a script without an
      # `if __name__ == '__main__':` guard, which 'spawn' needs). Decode here instead, one video at a time.
      _log.warning('Decoding worker processes could not start; decoding in this process instead (slower). Guard '
                   "the calling script's entry point with `if __name__ == '__main__':` to use all cores.")
      for job in retry + list(reversed(pending)):
        yield video_io.run_decode_job(job)
      return
    # A dead worker takes every job in flight down with the pool. Decode those one process each, so that the
    # file that crashes the decoder is found without losing the innocent ones; then carry on with a new pool.
    for job in retry:
      yield _decode_alone(job)


def _pool(num_workers: int) -> concurrent.futures.ProcessPoolExecutor:
  # 'spawn' keeps workers free of the parent's TensorFlow threads and state; they import only PyAV and PIL. Each
  # worker watches this process and exits when it dies, so that killing only the parent leaves no worker behind.
  return concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context('spawn'),
                                                initializer=video_io.exit_with_parent, initargs=(os.getpid(),))


def _decode_alone(job: video_io.DecodeJob) -> video_io.DecodeResult:
  with _pool(1) as pool:
    try:
      return pool.submit(video_io.run_decode_job, job).result()
    except concurrent.futures.process.BrokenProcessPool:
      return video_io.DecodeResult(job.key, None, 'unreadable', 'the decoder process crashed on this file')


class LocalVideoBuilder:
  """Mixin for a TFDS builder of local videos (Kinetics, Charades): its settings, kept by ``_set_up_local``, and its
  ``DecodeTally`` as ``tally``, whose counts read as the builder's own attributes (``skipped``, ``used``,
  ``total``, ``from_cache``), which ``nonlocal_jax.data.prepare`` reports."""

  def _set_up_local(self, videos_dir: Optional[str], short_side: Optional[int], max_fps: Optional[float],
                    jpeg_quality: int, num_workers: Optional[int], use_cache: bool) -> None:
    """Checks the settings (``check_settings``: one sentence, before any work) and keeps them, with a fresh tally
    (the videos written / asked for / resumed per split, and the skipped ones). Called before TFDS's
    ``__init__``, which may call ``_info()``."""
    check_settings(short_side, max_fps, jpeg_quality, num_workers)
    self._videos_dir = videos_dir
    self._short_side, self._max_fps, self._jpeg_quality = short_side, max_fps, jpeg_quality
    self.tally = DecodeTally(short_side, max_fps, jpeg_quality, num_workers or os.cpu_count() or 1, use_cache)

  @property
  def skipped(self) -> list[dict[str, str]]:
    """One dict per skipped video (``REPORT_FIELDS``)."""
    return self.tally.skipped

  @property
  def used(self) -> dict[str, int]:
    """Videos written, per split."""
    return self.tally.used

  @property
  def total(self) -> dict[str, int]:
    """Videos asked for (annotation rows), per split."""
    return self.tally.total

  @property
  def from_cache(self) -> dict[str, int]:
    """Videos taken from an earlier, interrupted run's cache, per split."""
    return self.tally.from_cache
