"""Charades (Sigurdsson et al. 2016: 157 action classes, multi-label) as a TFDS dataset, built from a user's local
copy of the videos.

TFDS ships no Charades and nothing is downloaded: the user brings the official annotations (``Charades_v1_classes.txt``,
``Charades_v1_train.csv``, ``Charades_v1_test.csv``; ``nonlocal_jax.data.charades_annotations``) and the videos
(e.g. the 480p mp4s of ``Charades_v1_480``), named ``{id}.mp4`` (or .webm/.mkv/.avi/.mov), in one folder or in
sub-folders. One command builds it::

  python -m nonlocal_jax.data.prepare charades --videos=DIR --annotations=DIR --data_dir=DIR

Splits: ``train`` (Charades_v1_train.csv) and ``test`` (Charades_v1_test.csv, the official validation set that the
paper reports on). Each example holds the frames as JPEG (``tfds.features.Video``, as Kinetics), the video id, the
rate of the stored frames (after ``--max_fps``), the actions (class index, start and end in seconds) and the
video-level label: the set of its actions' classes, a ``Sequence`` of ``ClassLabel``, so that
``builders.DatasetFeatures.multi_label`` is true (multi-hot batches, sigmoid loss, mAP). Training clips take their
labels from the actions that overlap them (``nonlocal_jax.data.clip_labels``); test views take the video's.

The same guarantees as Kinetics (``nonlocal_jax.data.local_videos``): all cores, resumable through a cache of decoded
videos (``{data_dir}/charades_cache/...``), missing, corrupt or empty videos skipped and listed in
``{data_dir}/charades_report.csv``, and a failed preparation leaves no prepared dataset. A bad folder or an unusable
annotation file (a malformed row, an unknown class id) stops the command before any work with one sentence.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

from nonlocal_jax.data import _compat
from nonlocal_jax.data import charades_annotations as annotations_lib
from nonlocal_jax.data import local_videos

NUM_CLASSES = 157  # Of the official release; a classes file with another count is used as it is, with a warning.
ACTIONS_KEY = 'actions'  # The feature of action intervals (builders.DatasetFeatures.actions_key).
_VIDEOS = 'the Charades videos ({id}.mp4, flat or in sub-folders)'

_log = logging.getLogger(__name__)


def report_path(data_dir: str) -> str:
  """Where preparation lists the skipped videos (CSV: split, video_id, reason, detail, path)."""
  return os.path.join(os.path.expanduser(data_dir), 'charades_report.csv')


def cache_dir(data_dir: str, short_side, max_fps) -> str:
  """Where decoded videos wait between interrupted runs; the settings are in the name so none is reused wrongly."""
  return os.path.join(os.path.expanduser(data_dir), 'charades_cache', f'short{short_side or 0}_fps{max_fps or 0:g}')


class Charades(_compat.LocalCodePath, _compat.LocalPreparationMessages, local_videos.LocalVideoBuilder,
               tfds.core.GeneratorBasedBuilder):
  """Charades from local files; see the module docstring for the expected layout and the command."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Local build: PyAV decoding, JPEG frames, action intervals and video-level labels.'}

  def __init__(self, *, videos_dir: Optional[str] = None, annotations_dir: Optional[str] = None,
               short_side: Optional[int] = 256, max_fps: Optional[float] = 30.0, jpeg_quality: int = 90,
               num_workers: Optional[int] = None, use_cache: bool = True, **kwargs):
    """Creates the builder.

    Args:
      videos_dir: folder of the video files (needed only to prepare).
      annotations_dir: folder of the official annotation files (needed only to prepare).
      short_side: shorter side of the stored frames in pixels (None: keep the source size).
      max_fps: frame-rate cap of the stored frames (None: keep the source rate).
      jpeg_quality: JPEG quality of the stored frames.
      num_workers: decoding processes (None: one per core).
      use_cache: keep each decoded video on disk so that an interrupted preparation can resume.
      **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ...).

    Raises:
      ValueError: a setting out of range (``local_videos.check_settings``) or an unusable annotation file
        (``charades_annotations.AnnotationError``); FileNotFoundError: a folder or annotation file that is not there.
    """
    self._set_up_local(videos_dir, short_side, max_fps, jpeg_quality, num_workers, use_cache)
    # Set before super().__init__, which may call _info().
    self._annotations = annotations_lib.read_annotations(annotations_dir) if annotations_dir else None
    if videos_dir is not None and not os.path.isdir(videos_dir):
      local_videos.index_videos(videos_dir, _VIDEOS)  # Raises the one-sentence error, before any work.
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    if self._annotations is not None:
      names = self._annotations.class_names
      if len(names) != NUM_CLASSES:
        _log.warning('The classes file lists %d classes, not the %d of Charades; building with %d classes.',
                     len(names), NUM_CLASSES, len(names))
      label = tfds.features.ClassLabel(names=names)
    else:
      label = tfds.features.ClassLabel()  # Names are restored from the prepared dataset's files.
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Video(shape=(None, None, None, 3), encoding_format='jpeg'),
            # The video's classes (each once): multi-hot in the batches, the label of every test view.
            'label': tfds.features.Sequence(label),
            # Each action: its class index (into label's names) and its interval in seconds (start <= end).
            ACTIONS_KEY: tfds.features.Sequence({
                'label': tfds.features.Scalar(dtype=np.int64),
                'start': tfds.features.Scalar(dtype=np.float32),
                'end': tfds.features.Scalar(dtype=np.float32),
            }),
            'video_id': tfds.features.Text(),
            'frame_rate': tfds.features.Scalar(dtype=np.float32),  # Of the stored frames (after --max_fps).
        }),
        supervised_keys=('video', 'label'),
        homepage='https://prior.allenai.org/projects/charades',
        metadata=tfds.core.MetadataDict(short_side=self._short_side, max_fps=self._max_fps,
                                        jpeg_quality=self._jpeg_quality),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    if not self._videos_dir or self._annotations is None:
      raise ValueError('Charades is built from local files: run `python -m nonlocal_jax.data.prepare charades '
                       '--videos=DIR --annotations=DIR --data_dir=DIR`.')
    files = local_videos.index_videos(self._videos_dir, _VIDEOS)
    return {split: self._generate_examples(split, videos, files)
            for split, videos in self._annotations.videos.items() if videos}

  def _generate_examples(self, split: str, videos: list[annotations_lib.Video], files: dict[str, str]) -> Iterator:
    cache = cache_dir(self._data_dir_root, self._short_side, self._max_fps)
    rows = {v.video_id: v for v in videos}
    for key, video in self.tally.decoded(split, [(v.video_id, files.get(v.video_id)) for v in videos], cache):
      actions = rows[key].actions
      yield key, {
          'video': video.frames,
          'label': rows[key].labels,
          ACTIONS_KEY: {'label': np.asarray([a.label for a in actions], np.int64),
                        'start': np.asarray([a.start for a in actions], np.float32),
                        'end': np.asarray([a.end for a in actions], np.float32)},
          'video_id': key,
          'frame_rate': np.float32(video.fps),
      }
    used, total = self.tally.used[split], self.tally.total[split]
    _log.info('Charades %s: used %d of %d videos, skipped %d.', split, used, total, total - used)
    self.write_report()

  def write_report(self) -> str:
    """Writes the videos skipped so far next to the dataset; returns the report's path."""
    return local_videos.write_report(report_path(self._data_dir_root), self.tally.skipped)
