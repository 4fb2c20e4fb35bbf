"""Bad Kinetics input, generated here: bad rows are reported and skipped, unusable files and flags are one sentence,
a preparation that used nothing is never counted as prepared, and killing the parent leaves no decode worker."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow_datasets as tfds

from nonlocal_jax.data import kinetics, kinetics_annotations, prepare
from tests.data import fixtures

HEADER = 'label,youtube_id,time_start,time_end,split'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _row(label, youtube_id, split='train'):
  return f'{label},{youtube_id},{fixtures.START},{fixtures.END},{split}'


def _good_train_rows():
  return [_row(label, y) for y, label, split, *_ in fixtures.GOOD_VIDEOS if split == 'train']


def _write(folder, name, content):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, name)
  with open(path, 'wb') as f:
    f.write(content if isinstance(content, bytes) else content.encode())
  return path


def _prepared_marker(data_dir):
  """Paths of TFDS's "prepared" marker (dataset_info.json) anywhere under data_dir."""
  return [os.path.join(r, f) for r, _, files in os.walk(data_dir) for f in files if f == 'dataset_info.json']


def _main(capsys, videos, annotations, data_dir, *flags):
  status = prepare.main(['kinetics400', f'--videos={videos}', f'--annotations={annotations}',
                         f'--data_dir={data_dir}', '--num_workers=1', *flags])
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
  return status, errors


def test_bad_rows_are_reported_with_file_and_line_and_skipped(kinetics_prepared, tmp_path):
  unlabelled = fixtures.GOOD_VIDEOS[3][0]  # A video that decodes: with an empty label it used to be stored as -1.
  bad = [(_row('', unlabelled), 'no label'),
         ('cooking,hhhhhhhhhhh,ten,20,train', 'bad number'),
         ('cooking,iiiiiiiiiii,-3,20,train', 'bad number'),
         ('cooking,jjjjjjjjjjj,10', 'short row'),
         (_row('cooking', 'kkkkkkkkkkk') + ',1', 'long row'),
         (_row('cooking', ''), 'no youtube_id'),
         (_row('cooking', 'lllllllllll', 'holiday'), 'unknown split')]
  good = _good_train_rows()
  lines = [HEADER, good[0], bad[0][0], bad[1][0], '', bad[2][0], good[1], *[b for b, _ in bad[3:]], good[2]]
  # No split in the file name: the split column decides, so an unknown split has nothing to fall back on.
  path = _write(str(tmp_path / 'annotations'), 'kinetics.csv', '\n'.join(lines) + '\n')
  want = {(path, lines.index(text) + 1, reason) for text, reason in bad}

  read = kinetics_annotations.read_annotations(str(tmp_path / 'annotations'))
  assert {(b.file, b.line, b.reason) for b in read.bad_rows} == want
  assert len(read.rows) == 3

  summary = prepare.prepare_kinetics('400', kinetics_prepared['videos'], str(tmp_path / 'annotations'),
                                     str(tmp_path / 'tfds'), num_workers=1)
  assert summary.used == {'train': 3} and {(b.file, b.line, b.reason) for b in summary.bad_rows} == want
  first = min(want, key=lambda w: w[1])
  assert f'7 annotation rows skipped (the first: {path} line {first[1]}, {first[2]})' in summary.message('k400')
  with open(summary.report_path, newline='') as f:
    reported = {(r['path'], int(r['detail'].split(':')[0].split()[1]), r['reason']) for r in csv.DictReader(f)
                if r['detail'].startswith('line ')}
  assert reported == want
  builder = tfds.builder('kinetics/400', data_dir=str(tmp_path / 'tfds'), try_gcs=False)
  names = builder.info.features['label'].names
  stored = {ex['video_id'].decode(): names[ex['label']] for ex in tfds.as_numpy(builder.as_dataset(split='train'))}
  assert stored == {fixtures.kinetics_id(y): label for y, label, s, *_ in fixtures.GOOD_VIDEOS if s == 'train'}


GOOD = '\n'.join([HEADER, *_good_train_rows()]) + '\n'
UNUSABLE = {
    'empty file': (b'', 'train.csv is empty'),
    'header only': (HEADER + '\n', 'train.csv has a header but no rows'),
    'id column renamed': (GOOD.replace('youtube_id', 'video'), 'train.csv has no youtube_id column'),
    'no label column': ('\n'.join(line.split(',', 1)[1] for line in GOOD.splitlines()) + '\n',
                        'train.csv has no label column'),
    'quote never closed': (GOOD.replace('bowling,', 'bowling,"'), 'train.csv line 3 opens a quote (") that is never'),
    'quote closed a line later': (GOOD.replace('bowling,', 'bowling,"').replace('\ncooking,', '\ncooking",'),
                                  'train.csv line 3 opens a quote (") that runs on to line 4'),
    'non-UTF-8 byte': (GOOD.replace('bowling', 'bowl\xe9').encode('latin-1'), 'train.csv line 3 is not UTF-8'),
}


@pytest.mark.parametrize('content,sentence', UNUSABLE.values(), ids=UNUSABLE.keys())
def test_an_unusable_csv_is_one_sentence_naming_the_file(content, sentence, tmp_path, capsys):
  annotations = str(tmp_path / 'annotations')
  _write(annotations, 'train.csv', content)
  status, errors = _main(capsys, tmp_path, annotations, tmp_path / 'tfds')
  assert status == 2 and len(errors) == 1 and sentence in errors[0] and os.path.join(annotations, 'train.csv') \
      in errors[0]
  assert not _prepared_marker(tmp_path)


def test_a_failed_preparation_is_not_counted_and_a_rerun_after_the_fix_prepares(kinetics_prepared, tmp_path,
                                                                                capsys):
  annotations, data_dir, nothing = str(tmp_path / 'annotations'), str(tmp_path / 'tfds'), tmp_path / 'no_videos'
  nothing.mkdir()
  _write(annotations, 'train.csv', '')  # Used to prepare an empty dataset with exit 0, then "already prepared".
  status, errors = _main(capsys, kinetics_prepared['videos'], annotations, data_dir)
  assert status == 2 and 'is empty' in errors[0] and not _prepared_marker(tmp_path)
  no_labels = [_row('', y) for y, *_ in fixtures.GOOD_VIDEOS]
  _write(annotations, 'train.csv', '\n'.join([HEADER, *no_labels]) + '\n')
  status, errors = _main(capsys, kinetics_prepared['videos'], annotations, data_dir)
  assert status == 1 and 'No row of the CSV files' in errors[0] and not _prepared_marker(tmp_path)
  _write(annotations, 'train.csv', GOOD)
  status, errors = _main(capsys, nothing, annotations, data_dir)  # Good rows, but no video decodes.
  assert status == 1 and 'No video of one split could be decoded' in errors[0] and not _prepared_marker(tmp_path)
  status, errors = _main(capsys, kinetics_prepared['videos'], annotations, data_dir)
  assert status == 0 and not errors and _prepared_marker(tmp_path)
  assert tfds.builder('kinetics/400', data_dir=data_dir, try_gcs=False).info.splits['train'].num_examples == 3


BAD_FLAGS = ['--short_side=-5', '--max_fps=-1', '--max_fps=nan', '--max_fps=inf', '--num_workers=0',
             '--num_workers=-2', '--jpeg_quality=0', '--jpeg_quality=101']


@pytest.mark.parametrize('flag', BAD_FLAGS)
def test_a_bad_flag_is_one_sentence_before_any_work(flag, tmp_path, capsys):
  # The folders do not exist: the flag is checked before they are looked at, and nothing is written.
  status = prepare.main(['kinetics400', f'--videos={tmp_path}/v', f'--annotations={tmp_path}/a',
                         f'--data_dir={tmp_path}/tfds', flag])
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
  assert status == 2 and len(errors) == 1 and errors[0].startswith(f'error: {flag.split("=")[0]} is ')
  assert os.listdir(tmp_path) == []


_KILLED_PARENT = '''
import json, multiprocessing, sys, time
from nonlocal_jax.data import kinetics, video_io
jobs = [video_io.DecodeJob(f'v{i}', sys.argv[1], 256, 30.0, 90, None) for i in range(40)]
results = kinetics.decode_all(jobs, 2)
next(results)  # Workers are up and busy with the rest.
print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
time.sleep(120)
'''


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'  # A zombie has exited; only its entry is left.
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_killing_only_the_parent_leaves_no_decode_worker(kinetics_prepared):
  video = next(os.path.join(r, f) for r, _, files in os.walk(kinetics_prepared['videos']) for f in files
               if f.startswith(fixtures.GOOD_VIDEOS[0][0]))
  parent = subprocess.Popen([sys.executable, '-c', _KILLED_PARENT, video], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
  try:
    workers = json.loads(parent.stdout.readline())
  finally:
    parent.kill()  # SIGKILL: the parent cannot tell its workers anything.
    parent.wait()
  assert len(workers) == 2
  deadline = time.monotonic() + 5
  while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
    time.sleep(0.1)
  survivors = [pid for pid in workers if _alive(pid)]
  for pid in survivors:
    os.kill(pid, signal.SIGKILL)  # Leave no stray process behind even when the test fails.
  assert not survivors
