"""Kinetics-400/600/700 as a TFDS dataset, built from a user's local copy of the videos.

TFDS ships no Kinetics and nothing is downloaded: the user brings the official CSV annotations (columns
``label,youtube_id,time_start,time_end,split[,is_cc]``) and the clips, named
``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` (other containers: .webm, .mkv, .avi), in one folder or in
class sub-folders. One command builds it::

  python -m nonlocal_jax.data.prepare kinetics400 --videos=DIR --annotations=DIR --data_dir=DIR

The builder is ``kinetics`` with configs ``400``, ``600`` and ``700``; ``kinetics400`` etc. are accepted as
aliases everywhere in this package. Each example holds the frames as JPEG (``tfds.features.Video``), the label,
the video id and the stored frame rate.

Robustness: a missing, unreadable, corrupt or empty video is skipped, counted and written to a report file
(``{data_dir}/kinetics_{config}_report.csv``); preparation never stops for one. So is a bad annotation row (empty
label, bad number, short row, ...: see ``kinetics_annotations``), with its CSV file and line; a CSV that cannot be
used at all, or a bad setting, stops the run before any work with one sentence. A preparation that would use
nothing (no usable row, no video decoded) raises PreparationError and, like any failed one, leaves no prepared
dataset (TFDS writes into a temporary folder and renames it only on success), so the same command prepares again
once the input is fixed. Speed: videos are decoded in a pool of worker processes (one per core by default), which
exit when their parent process dies, however it dies. Resumption: each decoded video is cached as soon as it is
done (``{data_dir}/kinetics_cache/...``), so a run that is interrupted and started again decodes only the videos
it had not reached; the prepare command deletes the cache once the dataset is written (``--keep_cache`` keeps
it).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import logging
import math
import multiprocessing
import os
from typing import Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

from nonlocal_jax.data import _compat
from nonlocal_jax.data import kinetics_annotations as annotations_lib
from nonlocal_jax.data import video_io

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov')

_log = logging.getLogger(__name__)

# The annotation rows and how they are read live in kinetics_annotations; these names stay importable from here.
Annotation = annotations_lib.Annotation
read_annotations = annotations_lib.read_annotations
video_id = annotations_lib.video_id


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


def index_videos(videos_dir: str) -> dict[str, str]:
  """Maps each video file's stem to its path, searching ``videos_dir`` and its class sub-folders."""
  if not os.path.isdir(videos_dir):
    raise FileNotFoundError(f'No videos folder at {videos_dir}: pass --videos=DIR, the folder that holds the '
                            'Kinetics clips (flat or in class sub-folders).')
  index = {}
  for root, _, files in os.walk(videos_dir):
    for name in files:
      stem, ext = os.path.splitext(name)
      if ext.lower() in VIDEO_EXTENSIONS:
        index.setdefault(stem, os.path.join(root, name))
  return index


def report_path(data_dir: str, config_name: str) -> str:
  """Where preparation lists the skipped videos (CSV: split, video_id, reason, detail, path)."""
  return os.path.join(os.path.expanduser(data_dir), f'kinetics_{config_name}_report.csv')


def cache_dir(data_dir: str, config_name: str, short_side, max_fps) -> str:
  """Where decoded videos wait between interrupted runs; the settings are in the name so none is reused wrongly."""
  return os.path.join(os.path.expanduser(data_dir), 'kinetics_cache',
                      f'{config_name}_short{short_side or 0}_fps{max_fps or 0:g}')


@dataclasses.dataclass
class KineticsConfig(tfds.core.BuilderConfig):
  """A Kinetics variant: its nominal number of classes."""
  num_classes: int = 400  # Classes in the official release; a mismatch with the CSVs is logged, not fatal.


class Kinetics(_compat.LocalCodePath, _compat.LocalPreparationMessages, tfds.core.GeneratorBasedBuilder):
  """Kinetics from local files; see the module docstring for the expected layout and the command."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Local build: PyAV decoding, JPEG frames, shorter side and frame rate configurable.'}
  BUILDER_CONFIGS = [
      KineticsConfig(name='400', num_classes=400, description='Kinetics-400'),
      KineticsConfig(name='600', num_classes=600, description='Kinetics-600'),
      KineticsConfig(name='700', num_classes=700, description='Kinetics-700'),
  ]

  def __init__(self, *, videos_dir: Optional[str] = None, annotations_dir: Optional[str] = None,
               short_side: Optional[int] = 256, max_fps: Optional[float] = 30.0, jpeg_quality: int = 90,
               num_workers: Optional[int] = None, use_cache: bool = True, **kwargs):
    """Creates the builder.

    Args:
      videos_dir: folder of the video files (needed only to prepare).
      annotations_dir: folder of the official CSV files (needed only to prepare).
      short_side: shorter side of the stored frames in pixels (None: keep the source size).
      max_fps: frame-rate cap of the stored frames (None: keep the source rate).
      jpeg_quality: JPEG quality of the stored frames.
      num_workers: decoding processes (None: one per core).
      use_cache: keep each decoded video on disk so that an interrupted preparation can resume.
      **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ``config``, ...).

    Raises:
      ValueError: a setting out of range (``check_settings``) or an unusable annotation file (AnnotationError).
    """
    check_settings(short_side, max_fps, jpeg_quality, num_workers)
    # Set before super().__init__, which may call _info().
    self._videos_dir = videos_dir
    self._annotations_dir = annotations_dir
    read = read_annotations(annotations_dir) if annotations_dir else None
    self._annotations = read.rows if read else None
    self.bad_rows: list[annotations_lib.BadRow] = read.bad_rows if read else []  # Skipped annotation rows.
    self._short_side = short_side
    self._max_fps = max_fps
    self._jpeg_quality = jpeg_quality
    self._num_workers = num_workers or os.cpu_count() or 1
    self._use_cache = use_cache
    self.skipped: list[dict[str, str]] = []  # Filled during preparation: one dict per skipped video.
    self.used: dict[str, int] = {}  # Filled during preparation: videos written, per split.
    self.total: dict[str, int] = {}  # Filled during preparation: annotation rows, per split.
    self.from_cache: dict[str, int] = {}  # Filled during preparation: videos taken from an earlier run's cache.
    super().__init__(**kwargs)

  def check_usable(self) -> None:
    """Raises PreparationError (after writing the report of skipped rows) when no annotation row can be used."""
    if self._annotations is not None and not self._annotations:
      report = self.write_report()
      raise PreparationError(
          f'No row of the CSV files in {self._annotations_dir} can be used: all {len(self.bad_rows)} are listed with '
          f'their file, line and fault in {report}; fix them and run again.')

  def _info(self) -> tfds.core.DatasetInfo:
    if self._annotations is not None:
      names = sorted({a.label for a in self._annotations if a.label})
      if names and len(names) != self.builder_config.num_classes:  # No names at all: preparation stops, says why.
        _log.warning('The annotations name %d classes, not the %d of Kinetics-%s; building with %d classes.',
                     len(names), self.builder_config.num_classes, self.builder_config.name, len(names))
      label = tfds.features.ClassLabel(names=names)
    else:
      label = tfds.features.ClassLabel()  # Names are restored from the prepared dataset's files.
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Video(shape=(None, None, None, 3), encoding_format='jpeg'),
            'label': label,
            'video_id': tfds.features.Text(),
            'frame_rate': tfds.features.Scalar(dtype=np.float32),
        }),
        supervised_keys=('video', 'label'),
        homepage='https://github.com/google-deepmind/kinetics-i3d',
        metadata=tfds.core.MetadataDict(short_side=self._short_side, max_fps=self._max_fps,
                                        jpeg_quality=self._jpeg_quality),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    if not self._videos_dir or self._annotations is None:
      raise ValueError(
          f'Kinetics-{self.builder_config.name} is built from local files: run `python -m nonlocal_jax.data.prepare '
          f'kinetics{self.builder_config.name} --videos=DIR --annotations=DIR --data_dir=DIR`.')
    self.check_usable()  # Else TFDS would write, and count as prepared, a dataset without splits.
    files = index_videos(self._videos_dir)
    splits = {}
    for split in ('train', 'validation', 'test'):
      rows = [a for a in self._annotations if a.split == split]
      if rows:
        splits[split] = self._generate_examples(split, rows, files)
    return splits

  def _generate_examples(self, split: str, rows: list[Annotation], files: dict[str, str]) -> Iterator:
    seen = set()
    jobs = []
    cache = cache_dir(self._data_dir_root, self.builder_config.name, self._short_side, self._max_fps)
    for row in rows:
      if row.video_id in seen:
        self._skip(split, row.video_id, 'duplicate', 'the same clip appears twice in the annotations', '')
        continue
      seen.add(row.video_id)
      path = files.get(row.video_id) or files.get(row.youtube_id)
      cache_path = None
      if self._use_cache:
        # Hashed sub-folders keep directories small for the 650k clips of Kinetics-700.
        shard = hashlib.md5(row.video_id.encode()).hexdigest()[:2]
        cache_path = os.path.join(cache, shard, row.video_id + '.pkl')
      jobs.append(video_io.DecodeJob(row.video_id, path, self._short_side, self._max_fps, self._jpeg_quality,
                                     cache_path))
    labels = {r.video_id: r.label for r in rows}
    paths = {j.key: j.path or '' for j in jobs}
    self.total[split] = len(rows)
    self.used[split] = 0
    self.from_cache[split] = 0
    for result in decode_all(jobs, self._num_workers):
      if result.video is None:
        self._skip(split, result.key, result.reason, result.detail, paths[result.key])
        continue
      self.used[split] += 1
      self.from_cache[split] += int(result.from_cache)
      yield result.key, {
          'video': result.video.frames,
          'label': labels[result.key],
          'video_id': result.key,
          'frame_rate': np.float32(result.video.fps),
      }
    _log.info('Kinetics-%s %s: used %d of %d videos, skipped %d.', self.builder_config.name, split,
              self.used[split], self.total[split], self.total[split] - self.used[split])
    self.write_report()

  def _skip(self, split, key, reason, detail, path):
    self.skipped.append({'split': split, 'video_id': key, 'reason': reason, 'detail': detail, 'path': path})

  def write_report(self) -> str:
    """Writes the skipped annotation rows and the videos skipped so far next to the dataset; returns its path.

    An annotation row's line has its CSV file as ``path`` and its line number at the start of ``detail``.
    """
    path = report_path(self._data_dir_root, self.builder_config.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = [{'split': b.split, 'video_id': '', 'reason': b.reason, 'detail': f'line {b.line}: {b.detail}',
             'path': b.file} for b in self.bad_rows]
    with open(path, 'w', newline='', encoding='utf-8') as f:
      writer = csv.DictWriter(f, fieldnames=['split', 'video_id', 'reason', 'detail', 'path'])
      writer.writeheader()
      writer.writerows(rows + self.skipped)
    return path


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
