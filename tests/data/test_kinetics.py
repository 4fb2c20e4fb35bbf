"""Kinetics from a tiny local folder of real mp4 files, with a corrupt file and a missing one."""

import csv
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nonlocal_jax.data import kinetics, prepare, video_io
from tests.data import fixtures


def _examples(data_dir, split):
  builder = tfds.builder('kinetics/400', data_dir=data_dir, try_gcs=False)
  names = builder.info.features['label'].names
  return {ex['video_id'].decode(): (names[ex['label']], ex) for ex in
          tfds.as_numpy(builder.as_dataset(split=split))}


def test_good_videos_are_there_with_their_labels(kinetics_prepared):
  for split in ('train', 'validation'):
    got = _examples(kinetics_prepared['data_dir'], split)
    want = {fixtures.kinetics_id(y): label for y, label, s, *_ in fixtures.GOOD_VIDEOS if s == split}
    assert {k: v[0] for k, v in got.items()} == want


def test_frames_are_resized_and_the_frame_rate_capped(kinetics_prepared):
  got = _examples(kinetics_prepared['data_dir'], 'train')
  for youtube_id, _, split, frames, fps, (h, w) in fixtures.GOOD_VIDEOS:
    if split != 'train':
      continue
    video = got[fixtures.kinetics_id(youtube_id)][1]
    assert min(video['video'].shape[1:3]) == 256
    assert (video['video'].shape[1] > video['video'].shape[2]) == (h > w)
    assert video['frame_rate'] == min(fps, 30)
    assert len(video['video']) == (frames if fps <= 30 else frames * 30 // fps)
  # The 60 fps video keeps every other frame: stored frame i is source frame 2i (colours are per frame).
  video = got[fixtures.kinetics_id('ccccccccccc')][1]['video']
  for i in range(len(video)):
    np.testing.assert_allclose(video[i, 20, 20], fixtures.frame_color(2 * i), atol=12)


def test_bad_videos_are_skipped_and_reported(kinetics_prepared):
  summary = kinetics_prepared['summary']
  assert summary.used == {'train': 3, 'validation': 2} and summary.total == {'train': 4, 'validation': 3}
  assert 'used 5 of 7 videos' in summary.message('kinetics400')
  with open(summary.report_path, newline='') as f:
    report = {row['video_id']: row for row in csv.DictReader(f)}
  assert set(report) == {fixtures.kinetics_id(fixtures.CORRUPT_VIDEO[0]),
                         fixtures.kinetics_id(fixtures.MISSING_VIDEO[0])}
  assert report[fixtures.kinetics_id(fixtures.CORRUPT_VIDEO[0])]['reason'] == 'corrupt'
  assert report[fixtures.kinetics_id(fixtures.MISSING_VIDEO[0])]['reason'] == 'missing'


def test_an_interrupted_preparation_resumes_from_the_cache(kinetics_prepared, tmp_path):
  # The session fixture kept its cache; a fresh run over the same cache decodes nothing again.
  data_dir = tmp_path / 'tfds'
  source = kinetics.cache_dir(kinetics_prepared['data_dir'], '400', 256, 30.0)
  target = kinetics.cache_dir(str(data_dir), '400', 256, 30.0)
  os.makedirs(os.path.dirname(target))
  os.symlink(source, target)  # Stands in for the cache an interrupted run leaves behind.
  summary = prepare.prepare_kinetics('400', kinetics_prepared['videos'], kinetics_prepared['annotations'],
                                     str(data_dir), num_workers=1, keep_cache=True)
  assert summary.from_cache == {'train': 3, 'validation': 2}
  assert 'taken from an interrupted run' in summary.message('kinetics400')
  again = prepare.prepare_kinetics('400', kinetics_prepared['videos'], kinetics_prepared['annotations'],
                                   str(data_dir), num_workers=1)
  assert again.already_prepared


def test_decoding_errors_are_results_not_exceptions(tmp_path):
  bad = tmp_path / 'bad.mp4'
  bad.write_bytes(b'not a video at all' * 10)
  empty = tmp_path / 'empty.mp4'
  empty.write_bytes(b'')
  for path, reasons in ((str(bad), {'corrupt', 'unreadable'}), (str(empty), {'corrupt', 'unreadable', 'empty'}),
                        (str(tmp_path / 'none.mp4'), {'missing'})):
    result = video_io.run_decode_job(video_io.DecodeJob('x', path, 256, 30.0, 90, None))
    assert result.video is None and result.reason in reasons


def test_annotations_split_from_column_or_file_name(tmp_path):
  (tmp_path / 'kinetics_700_val.csv').write_text('label,youtube_id,time_start,time_end\nx y,abc,1,11\n')
  (tmp_path / 'k.csv').write_text('label,youtube_id,time_start,time_end,split\nz,def,0,10,train\n')
  read = kinetics.read_annotations(str(tmp_path))
  assert not read.bad_rows
  assert {(r.video_id, r.label, r.split) for r in read.rows} == {('abc_000001_000011', 'x y', 'validation'),
                                                            ('def_000000_000010', 'z', 'train')}


def test_command_line_reports_a_bad_path(tmp_path, capsys):
  status = prepare.main(['kinetics400', f'--videos={tmp_path}/nope', f'--annotations={tmp_path}/nope',
                         f'--data_dir={tmp_path}'])
  assert status == 2
  assert 'pass --annotations=DIR' in capsys.readouterr().err
