"""save_results writes every file under its prefix only, and load_results reads back exactly what was saved."""

import csv
import json
import os

import numpy as np
import pytest

from nonlocal_jax import evaluation as ev
from tests import remote
from tests.evaluation import cases
from tests.evaluation.cases import NUM_CLASSES

NAMES = ['abseiling', 'air drumming', 'answering, questions', 'archery', 'arm wrestling', 'arranging flowers']


def _result(class_names=None, views=cases.VIEW_ORDER):
  batches = cases.make_batches(views, batch_size=5)
  return ev.evaluate(cases.fake_predict(), batches, num_classes=NUM_CLASSES, class_names=class_names)


def test_files_and_round_trip(tmp_path):
  result = _result(class_names=NAMES)
  directory = tmp_path / 'new' / 'eval'  # Created by save_results.
  paths = ev.save_results(result, str(directory), prefix='test')
  expected = {'test_metrics.json', 'test_video_scores.npz', 'test_per_class_accuracy.csv', 'test_confusion.csv',
              'test_confusion.png'}
  assert sorted(os.listdir(directory)) == sorted(expected)  # No temporary files left behind.
  assert {os.path.basename(p) for p in paths.values()} == expected
  with open(directory / 'test_metrics.json') as f:
    assert json.load(f) == cases.EXPECTED_METRICS
  with np.load(directory / 'test_video_scores.npz') as z:
    np.testing.assert_array_equal(z['video_ids'], [11, 12, 13, 14, 15, 16])
    assert z['video_ids'].dtype == np.int64
    np.testing.assert_array_equal(z['scores'], [cases.VIDEO_SCORES[n] for n in 'abcdef'])
    np.testing.assert_array_equal(z['labels'], [0, 2, 5, 1, 3, 2])
  with open(directory / 'test_per_class_accuracy.csv', newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['class_index', 'class_name', 'num_videos', 'accuracy']
  assert rows[3] == ['2', 'answering, questions', '2', '1.0'] and rows[5] == ['4', 'arm wrestling', '0', 'nan']
  with open(directory / 'test_confusion.csv', newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0][1:] == NAMES and [r[0] for r in rows[1:]] == NAMES
  np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], int), cases.expected_confusion())
  assert (directory / 'test_confusion.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  cases.assert_same_result(ev.load_results(str(directory), 'test'), result)


def test_without_class_names_round_trip(tmp_path):
  result = _result()
  ev.save_results(result, str(tmp_path), prefix='val_step_100')
  loaded = ev.load_results(str(tmp_path), 'val_step_100')
  assert loaded.class_names is None
  cases.assert_same_result(loaded, result)


def test_other_prefixes_are_never_overwritten(tmp_path):
  ev.save_results(_result(), str(tmp_path), prefix='val')
  before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
  assert len(before) == 5
  other = _result(views=cases.VIEW_ORDER[:6])
  assert other.metrics != cases.EXPECTED_METRICS
  # Prefixes that extend another prefix, or look like one of its file names, write files of their own.
  for prefix in ('test', 'val_video', 'val_confusion', 'val_per_class'):
    ev.save_results(other, str(tmp_path), prefix=prefix)
  assert {name: (tmp_path / name).read_bytes() for name in before} == before
  assert len(os.listdir(tmp_path)) == 25
  cases.assert_same_result(ev.load_results(str(tmp_path), 'val'), _result())
  cases.assert_same_result(ev.load_results(str(tmp_path), 'val_confusion'), other)


def test_many_classes_skip_the_figure_and_bad_prefixes_fail(tmp_path):
  n = ev.MAX_PLOT_CLASSES + 1
  batch = {'video_id': np.arange(n), 'label': np.arange(n), 'mask': np.ones(n, bool)}
  result = ev.evaluate(lambda b: np.eye(n), [batch], num_classes=n)
  assert result.metrics['video_top1'] == 1.0 and result.metrics['mean_class_accuracy'] == 1.0
  paths = ev.save_results(result, str(tmp_path))
  assert 'confusion_plot' not in paths and not (tmp_path / 'test_confusion.png').exists()
  np.testing.assert_array_equal(ev.load_results(str(tmp_path)).confusion, np.eye(n))
  for prefix in ('', '../test', 'a/b', '.hidden'):
    with pytest.raises(ValueError, match='plain file-name prefix'):
      ev.save_results(result, str(tmp_path), prefix=prefix)


def test_round_trip_on_a_remote_file_system(remote_dir, tmp_path, monkeypatch):
  result = _result(class_names=NAMES)
  ev.save_results(result, str(tmp_path / 'local'), prefix='test')
  local = {name: (tmp_path / 'local' / name).read_bytes() for name in os.listdir(tmp_path / 'local')}
  monkeypatch.chdir(tmp_path)  # Where a wrongly local './ram:/...' folder would appear.
  directory = f'{remote_dir}/run/eval'  # Created by save_results.
  paths = ev.save_results(result, directory, prefix='test')
  assert sorted(paths.values()) == sorted(f'{directory}/{name}' for name in local)
  written = remote.files_under(remote_dir)
  assert sorted(written) == sorted(f'run/eval/{name}' for name in local)  # No temporary files left behind.
  for name, data in local.items():
    if not name.endswith('.npz'):  # Zip members carry the time of writing.
      assert written[f'run/eval/{name}'] == data, name
  cases.assert_same_result(ev.load_results(directory, 'test'), result)
  assert os.listdir(tmp_path) == ['local']


def test_two_classes_leave_top_5_out_and_name_the_classes(tmp_path):
  batch = {'video_id': np.array([1, 2, 3, 1]), 'label': np.array([0, 1, 1, 0]), 'view_index': np.array([0, 0, 0, 1])}
  scores = np.array([[.75, .25], [.25, .75], [.75, .25], [.5, .5]])
  result = ev.evaluate(lambda b: scores, [batch], num_classes=2, class_names=['different', 'same'])
  ev.save_results(result, str(tmp_path))
  with open(tmp_path / 'test_metrics.json') as f:
    assert json.load(f) == {'clip_top1': .5, 'video_top1': 2 / 3, 'mean_class_accuracy': .75, 'num_videos': 3,
                            'num_views': 4}
  with open(tmp_path / 'test_per_class_accuracy.csv', newline='') as f:
    assert list(csv.reader(f)) == [['class_index', 'class_name', 'num_videos', 'accuracy'],
                                   ['0', 'different', '1', '1.0'], ['1', 'same', '2', '0.5']]
  with open(tmp_path / 'test_confusion.csv', newline='') as f:
    assert list(csv.reader(f)) == [['true \\ predicted', 'different', 'same'], ['different', '1', '0'],
                                   ['same', '1', '1']]
  loaded = ev.load_results(str(tmp_path))
  cases.assert_same_result(loaded, result)
  assert loaded.summary() == result.summary() == ('video top-1 66.67% over 1-2 views per video, clip top-1 50.00%, '
                                                  'mean class accuracy 75.00% (3 videos, 4 views)')
