"""Prepares a dataset in a TFDS data directory, once, before training.

Kinetics, from a local copy (videos flat or in class folders, the official CSVs)::

  python -m nonlocal_jax.data.prepare kinetics400 --videos=DIR --annotations=DIR --data_dir=DIR \\
      [--short_side=256] [--max_fps=30] [--num_workers=N] [--keep_cache]

Charades, from a local copy (videos flat or in folders; Charades_v1_classes.txt, Charades_v1_train.csv and
Charades_v1_test.csv), with the same flags::

  python -m nonlocal_jax.data.prepare charades --videos=DIR --annotations=DIR --data_dir=DIR

The synthetic long-range benchmark (generated locally in seconds)::

  python -m nonlocal_jax.data.prepare synthetic_long_range/same_different --data_dir=DIR [--num_train=4000 ...]

Any other TFDS dataset (``ucf101``, ``cifar10``, ...) is handed to TFDS's own ``download_and_prepare``, which
needs network access or ``--manual_dir`` for datasets that TFDS cannot download itself.

Interrupted? Run the same command again: decoded Kinetics and Charades videos are cached, so only the rest is
decoded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from typing import Optional, Sequence

import tensorflow_datasets as tfds

from nonlocal_jax import paths
from nonlocal_jax.data import _compat
from nonlocal_jax.data import builders
from nonlocal_jax.data import charades as charades_lib
from nonlocal_jax.data import kinetics as kinetics_lib
from nonlocal_jax.data import local_videos
from nonlocal_jax.data import records
from nonlocal_jax.data import synthetic as synthetic_lib

# Nothing imported here imports TensorFlow: Kinetics decoding workers are started with 'spawn' and re-import this
# module when it is the program's entry point, and they should not pay seconds and hundreds of megabytes for a
# TensorFlow they never use.


@dataclasses.dataclass
class PreparationSummary:
  """What a preparation of local videos (Kinetics, Charades) did."""
  used: dict  # Videos written, per split.
  total: dict  # Annotation rows, per split.
  skipped: list  # One dict per skipped video (split, video_id, reason, detail, path).
  report_path: str  # CSV file listing the skipped videos.
  seconds: float  # Wall time of the preparation.
  already_prepared: bool  # True when the dataset was there already and nothing was done.
  from_cache: dict = dataclasses.field(default_factory=dict)  # Videos reused from an interrupted run, per split.
  bad_rows: list = dataclasses.field(default_factory=list)  # Annotation rows skipped (kinetics_annotations.BadRow).

  def message(self, name: str) -> str:
    """A one-paragraph account for the console."""
    if self.already_prepared:
      return f'{name} is already prepared; nothing to do (delete its folder to prepare it again).'
    per_split = ', '.join(f'{s} {self.used[s]}/{self.total[s]}' for s in self.total)
    resumed = sum(self.from_cache.values())
    rows = ''
    if self.bad_rows:
      first = self.bad_rows[0]
      rows = (f'{len(self.bad_rows)} annotation row{"s" if len(self.bad_rows) > 1 else ""} skipped (the first: '
              f'{first.file} line {first.line}, {first.reason}) and ')
    return (f'{name}: used {sum(self.used.values())} of {sum(self.total.values())} videos ({per_split}); '
            f'{rows}{len(self.skipped)} videos skipped, listed in {self.report_path}; '
            + (f'{resumed} taken from an interrupted run; ' if resumed else '') + f'{self.seconds:.1f} s.')


def index_splits(builder: tfds.core.DatasetBuilder) -> None:
  """Builds the offset index of every shard of every split (``nonlocal_jax.data.records``) beside the dataset, so
  that a copy of the folder (e.g. to gs://) carries it and no reader has to scan the shards."""
  for split in builder.info.splits:
    records.open_split(builder, split)


def prepare_kinetics(variant: str, videos_dir: str, annotations_dir: str, data_dir: str, *,
                     short_side: Optional[int] = 256, max_fps: Optional[float] = 30.0, jpeg_quality: int = 90,
                     num_workers: Optional[int] = None, keep_cache: bool = False) -> PreparationSummary:
  """Builds ``kinetics/<variant>`` in ``data_dir`` from local files; see ``nonlocal_jax.data.kinetics``.

  Bad settings and unusable annotation files raise ValueError before any work; a preparation that would use
  nothing (no usable annotation row, no video decoded) raises ``kinetics.PreparationError`` and leaves no
  prepared dataset behind, so the same command prepares again once the input is fixed.
  """
  variant = variant.replace('kinetics', '').strip('/') or '400'
  if variant not in ('400', '600', '700'):
    raise ValueError(f'Unknown Kinetics variant {variant!r}: use kinetics400, kinetics600 or kinetics700.')
  _check_local(data_dir, 'Kinetics')
  data_dir = os.path.expanduser(data_dir)
  builder = kinetics_lib.Kinetics(config=variant, data_dir=data_dir, videos_dir=videos_dir,
                                  annotations_dir=annotations_dir, short_side=short_side, max_fps=max_fps,
                                  jpeg_quality=jpeg_quality, num_workers=num_workers)
  if builder.is_prepared():
    return PreparationSummary({}, {}, [], kinetics_lib.report_path(data_dir, variant), 0.0, True)
  builder.check_usable()
  return _prepare_local(builder, videos_dir, kinetics_lib.cache_dir(data_dir, variant, short_side, max_fps),
                        keep_cache, 'clips named in the CSVs', list(builder.bad_rows))


def prepare_charades(videos_dir: str, annotations_dir: str, data_dir: str, *, short_side: Optional[int] = 256,
                     max_fps: Optional[float] = 30.0, jpeg_quality: int = 90, num_workers: Optional[int] = None,
                     keep_cache: bool = False) -> PreparationSummary:
  """Builds ``charades`` in ``data_dir`` from local files; see ``nonlocal_jax.data.charades``.

  Bad settings, folders and annotation files raise ValueError or FileNotFoundError before any work; a preparation
  that decodes no video of a split raises ``local_videos.PreparationError`` and leaves no prepared dataset behind.
  """
  _check_local(data_dir, 'Charades')
  data_dir = os.path.expanduser(data_dir)
  builder = charades_lib.Charades(data_dir=data_dir, videos_dir=videos_dir, annotations_dir=annotations_dir,
                                  short_side=short_side, max_fps=max_fps, jpeg_quality=jpeg_quality,
                                  num_workers=num_workers)
  if builder.is_prepared():
    return PreparationSummary({}, {}, [], charades_lib.report_path(data_dir), 0.0, True)
  return _prepare_local(builder, videos_dir, charades_lib.cache_dir(data_dir, short_side, max_fps), keep_cache,
                        'videos named in the CSVs')


def _check_local(data_dir: str, name: str) -> None:
  if paths.is_remote(data_dir):
    # The decoding workers write their resumable cache and the report with local file calls.
    raise ValueError(f'{name} is prepared on a local disk, not in {data_dir}: pass a local --data_dir, then copy '
                     f'it with `gsutil -m rsync -r LOCAL_DIR {data_dir}`.')


def _prepare_local(builder, videos_dir: str, cache: str, keep_cache: bool, videos: str, bad_rows=()
                   ) -> PreparationSummary:
  """Prepares a local-copy builder (Kinetics, Charades), writes its report and offset index, drops its cache."""
  start = time.time()
  try:
    builder.download_and_prepare()
  except AssertionError as e:
    if 'No examples were yielded' not in str(e):
      raise
    report = builder.write_report()
    raise local_videos.PreparationError(
        f'No video of one split could be decoded ({e}): check that --videos={videos_dir} holds the {videos}, and see '
        f'{report} for why each one was skipped.') from e
  report = builder.write_report()
  index_splits(builder)
  if not keep_cache:
    # The cache only serves to resume an interrupted run; once the dataset is written it is a second copy.
    shutil.rmtree(cache, ignore_errors=True)
    try:
      os.rmdir(os.path.dirname(cache))  # Only if no other variant's cache is left in it.
    except OSError:
      pass
  return PreparationSummary(dict(builder.used), dict(builder.total), list(builder.skipped), report,
                            time.time() - start, False, dict(builder.from_cache), list(bad_rows))


def prepare_synthetic(name: str, data_dir: str, **settings) -> tfds.core.DatasetBuilder:
  """Generates ``synthetic_long_range/<task>`` (settings other than the defaults give a named variant).

  Prints one line before (the dataset, its clips, the directory) and one after (the time it took); TFDS's own
  "Downloading and preparing" lines go to the log, since nothing is downloaded, and it shows no progress bars.
  """
  builder = builders.get_builder(name, data_dir, settings)
  label = f'{builder.name}/{builder.builder_config.name}'
  directory = paths.absolute(paths.expand(data_dir))
  if builder.is_prepared():
    print(f'{label} is already prepared in {directory}.')
    return builder
  c = builder.builder_config
  counts = {'train': c.num_train, 'validation': c.num_validation, 'test': c.num_test}
  print(f'Generating {label} locally: {sum(counts.values()):,} clips ('
        + ', '.join(f'{n:,} {split}' for split, n in counts.items() if n > 0) + f') in {directory}.')
  start = time.time()
  with _compat.no_progress_bars():  # Seconds of work: the two lines say it; bars would add dozens in a log.
    builder.download_and_prepare()
  index_splits(builder)
  print(f'Generated {label} in {time.time() - start:.1f} s.')
  return builder


def _synthetic_settings() -> list:
  # The generation settings are the numeric fields and `same`; the task comes from the name, the rest is TFDS
  # bookkeeping.
  return [f for f in dataclasses.fields(synthetic_lib.SyntheticConfig)
          if (isinstance(f.default, (int, float)) and not isinstance(f.default, bool)) or f.name == 'same']


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('name', help='kinetics400, kinetics600, kinetics700, charades, synthetic_long_range/<task>, '
                                   'or a TFDS dataset name')
  parser.add_argument('--data_dir', default=None, help='TFDS data directory (default ~/tensorflow_datasets)')
  kin = parser.add_argument_group('Kinetics and Charades')
  kin.add_argument('--videos', help='folder of the video files (flat or in sub-folders)')
  kin.add_argument('--annotations', help='folder of the official annotation files')
  kin.add_argument('--short_side', type=int, default=256, help='shorter side of stored frames; 0 keeps the source')
  kin.add_argument('--max_fps', type=float, default=30.0, help='frame-rate cap of stored frames; 0 keeps it')
  kin.add_argument('--jpeg_quality', type=int, default=90, help='JPEG quality of stored frames')
  kin.add_argument('--num_workers', type=int, default=None, help='decoding processes (default: one per core)')
  kin.add_argument('--keep_cache', action='store_true', help='keep the decoded-video cache after success')
  syn = parser.add_argument_group('synthetic_long_range')
  for field in _synthetic_settings():
    syn.add_argument(f'--{field.name}', type=type(field.default), default=None,
                     help=f'default {field.default}')
  parser.add_argument('--manual_dir', default=None, help='other TFDS datasets: folder of manually downloaded files')
  args = parser.parse_args(argv)
  data_dir = args.data_dir or os.path.expanduser('~/tensorflow_datasets')
  full = builders.resolve_name(args.name)
  if full.startswith('kinetics/') or full == 'charades':
    what = 'Charades' if full == 'charades' else 'Kinetics'
    if not args.videos or not args.annotations:
      parser.error(f'{what} is built from local files: pass --videos=DIR and --annotations=DIR.')
    settings = dict(short_side=args.short_side or None, max_fps=args.max_fps or None, jpeg_quality=args.jpeg_quality,
                    num_workers=args.num_workers, keep_cache=args.keep_cache)
    try:
      if full == 'charades':
        summary = prepare_charades(args.videos, args.annotations, data_dir, **settings)
      else:
        summary = prepare_kinetics(full, args.videos, args.annotations, data_dir, **settings)
    except (FileNotFoundError, ValueError) as e:  # Bad flags, folders or annotation files: nothing was done.
      print(f'error: {e}', file=sys.stderr)
      return 2
    except local_videos.PreparationError as e:  # Nothing usable: nothing was written but the report.
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(summary.message(args.name))
    return 0
  if full.startswith('synthetic_long_range/'):
    settings = {f.name: getattr(args, f.name) for f in _synthetic_settings()}
    prepare_synthetic(full, data_dir, **settings)
    return 0
  builder = builders.get_builder(args.name, data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  index_splits(builder)
  print(f'{args.name} is prepared in {data_dir}.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
