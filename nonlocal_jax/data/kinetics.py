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

import dataclasses
import logging
import os
from typing import Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

from nonlocal_jax.data import _compat
from nonlocal_jax.data import kinetics_annotations as annotations_lib
from nonlocal_jax.data import local_videos

_log = logging.getLogger(__name__)

# The annotation rows and how they are read live in kinetics_annotations, what every local video copy shares in
# local_videos; these names stay importable from here.
Annotation = annotations_lib.Annotation
read_annotations = annotations_lib.read_annotations
video_id = annotations_lib.video_id
VIDEO_EXTENSIONS = local_videos.VIDEO_EXTENSIONS
PreparationError = local_videos.PreparationError
check_settings = local_videos.check_settings
decode_all = local_videos.decode_all


def index_videos(videos_dir: str) -> dict[str, str]:
  """Maps each video file's stem to its path, searching ``videos_dir`` and its class sub-folders."""
  return local_videos.index_videos(videos_dir, 'the Kinetics clips (flat or in class sub-folders)')


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


class Kinetics(_compat.LocalCodePath, _compat.LocalPreparationMessages, local_videos.LocalVideoBuilder,
               tfds.core.GeneratorBasedBuilder):
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
    self._set_up_local(videos_dir, short_side, max_fps, jpeg_quality, num_workers, use_cache)
    # Set before super().__init__, which may call _info().
    self._annotations_dir = annotations_dir
    read = read_annotations(annotations_dir) if annotations_dir else None
    self._annotations = read.rows if read else None
    self.bad_rows: list[annotations_lib.BadRow] = read.bad_rows if read else []  # Skipped annotation rows.
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
    cache = cache_dir(self._data_dir_root, self.builder_config.name, self._short_side, self._max_fps)
    videos = [(r.video_id, files.get(r.video_id) or files.get(r.youtube_id)) for r in rows]
    labels = {r.video_id: r.label for r in rows}
    for key, video in self.tally.decoded(split, videos, cache):
      yield key, {
          'video': video.frames,
          'label': labels[key],
          'video_id': key,
          'frame_rate': np.float32(video.fps),
      }
    used, total = self.tally.used[split], self.tally.total[split]
    _log.info('Kinetics-%s %s: used %d of %d videos, skipped %d.', self.builder_config.name, split, used, total,
              total - used)
    self.write_report()

  def write_report(self) -> str:
    """Writes the skipped annotation rows and the videos skipped so far next to the dataset; returns its path.

    An annotation row's line has its CSV file as ``path`` and its line number at the start of ``detail``.
    """
    rows = [{'split': b.split, 'video_id': '', 'reason': b.reason, 'detail': f'line {b.line}: {b.detail}',
             'path': b.file} for b in self.bad_rows]
    return local_videos.write_report(report_path(self._data_dir_root, self.builder_config.name),
                                     rows + self.tally.skipped)
