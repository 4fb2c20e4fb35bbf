"""Multi-label evaluation: views pooled by max (or mean), mAP of the pooled scores, hit@1, the exchange between
processes and the result files."""

import csv
import os

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from nonlocal_jax import evaluation as ev
from tests.evaluation import cases

K = 4
# Per-view sigmoid scores (multiples of 1/8: exact in floating point) and each video's multi-hot label.
VIEWS = {
    (1, 0): [.5, .125, .75, 0], (1, 1): [.25, .625, .125, .125],
    (2, 0): [.875, .25, .25, .5],
    (3, 0): [.125, .5, .375, .25], (3, 1): [.375, .25, .5, .75], (3, 2): [0, .125, .25, .5],
    (4, 0): [.625, .375, .125, 0], (4, 1): [.25, .875, .5, .125],
    (5, 0): [.75, .75, .75, .75],  # A video without any positive: left out of the mAP.
}
LABELS = {1: [1, 0, 1, 0], 2: [1, 0, 0, 0], 3: [0, 1, 1, 0], 4: [0, 1, 0, 0], 5: [0, 0, 0, 0]}
# Class 3 has no positive: no AP, left out of the mean.
ORDER = [(3, 2), (1, 0), (4, 1), (5, 0), (2, 0), (3, 0), (1, 1), (4, 0), (3, 1)]


def _batches(views, batch_size=4):
  out = []
  for i in range(0, len(views), batch_size):
    chunk = views[i:i + batch_size]
    pad = batch_size - len(chunk)
    out.append({'video_id': np.array([v for v, _ in chunk] + [0] * pad, np.int32),
                'view_index': np.array([j for _, j in chunk] + [0] * pad, np.int32),
                'label': np.array([LABELS[v] for v, _ in chunk] + [[0] * K] * pad, np.float32),
                'mask': np.array([True] * len(chunk) + [False] * pad)})
  return out


def _predict(batch):
  # Padding rows score 1 everywhere: they would change every maximum if they were counted.
  return np.array([VIEWS.get((v, j), [1.] * K) for v, j in zip(batch['video_id'], batch['view_index'])], np.float32)


def _pooled(pool):
  return np.array([pool([VIEWS[key] for key in VIEWS if key[0] == v], axis=0) for v in sorted(LABELS)])


@pytest.mark.parametrize('pooling,pool', [(None, np.max), ('max', np.max), ('mean', np.mean)])
def test_pooled_scores_and_map_against_scikit_learn(pooling, pool):
  result = ev.evaluate(_predict, _batches(ORDER), num_classes=K, multi_label=True, view_pooling=pooling)
  expected_scores = _pooled(pool)
  labels = np.array([LABELS[v] for v in sorted(LABELS)])
  np.testing.assert_array_equal(result.video_scores, expected_scores)
  np.testing.assert_array_equal(result.video_labels, labels)
  assert result.view_pooling == (pooling or 'max')
  keep = labels.any(axis=1)
  reference = [average_precision_score(labels[keep, k], expected_scores[keep, k]) for k in range(3)]
  np.testing.assert_allclose(result.per_class_ap[:3], reference, atol=1e-12)
  assert np.isnan(result.per_class_ap[3])
  m = result.metrics
  assert m['video_map'] == pytest.approx(np.mean(reference), abs=1e-12)
  assert (m['map_classes'], m['map_videos'], m['num_videos'], m['num_views']) == (3, 4, 5, 9)
  # hit@1 by its definition: the top-scoring class of the row is a positive (no ties at the top here).
  views = np.array([VIEWS[key] for key in ORDER])
  view_labels = np.array([LABELS[v] for v, _ in ORDER])
  assert m['clip_hit1'] == pytest.approx(view_labels[np.arange(9), views.argmax(axis=1)].mean())
  assert m['video_hit1'] == pytest.approx(labels[np.arange(5), expected_scores.argmax(axis=1)].mean())
  assert 'video_top1' not in m and 'clip_hit5' not in m  # 4 classes: hit@5 is always right.


def test_max_is_the_multi_label_default_and_it_changes_the_result():
  by_max = ev.evaluate(_predict, _batches(ORDER), num_classes=K, multi_label=True)
  by_mean = ev.evaluate(_predict, _batches(ORDER), num_classes=K, multi_label=True, view_pooling='mean')
  assert by_max.view_pooling == 'max' and by_max.metrics['video_map'] != by_mean.metrics['video_map']


def test_views_that_disagree_on_the_multi_hot_label_name_the_video():
  batches = _batches(ORDER)
  batches[2]['label'][0, 3] = 1.0  # The fault: the last view of video 3 has another label.
  with pytest.raises(ValueError, match=r'Video 3 has views with different labels \(classes \[1, 2\] and classes '
                                       r'\[1, 2, 3\]\)'):
    ev.evaluate(_predict, batches, num_classes=K, multi_label=True)


def test_labels_that_are_not_multi_hot_rows_fail_in_one_sentence():
  batches = _batches(ORDER)
  with pytest.raises(ValueError, match='multi-hot rows of num_classes=5'):
    ev.evaluate(_predict, batches, num_classes=5, multi_label=True)
  for value in (2.0, 0.5):  # 0.5 would pass as 0 if the labels were cast to integers before the check.
    batches[0]['label'][0, 0] = value
    with pytest.raises(ValueError, match='holds values other than 0 and 1'):
      ev.evaluate(_predict, batches, num_classes=K, multi_label=True)


def test_two_processes_get_the_one_process_result_bit_for_bit():
  reference = ev.evaluate(_predict, _batches(ORDER), num_classes=K, multi_label=True)
  shares = (ORDER[:6], ORDER[6:])  # Video 3 and 4 split between the processes.
  processes = cases.FakeProcesses(2)
  results = processes.run(lambda p: ev.evaluate(_predict, _batches(shares[p], 3), num_classes=K, multi_label=True,
                                                gather=processes.gather_for(p)))
  for result in results:
    assert isinstance(result, ev.EvalResult), result
    assert result.metrics == reference.metrics
    for field in ('video_ids', 'video_scores', 'video_labels', 'video_num_views', 'per_class_ap'):
      np.testing.assert_array_equal(getattr(result, field), getattr(reference, field), err_msg=field)


def test_files_and_round_trip(tmp_path):
  result = ev.evaluate(_predict, _batches(ORDER), num_classes=K, multi_label=True, class_names='wxyz')
  paths = ev.save_results(result, str(tmp_path), prefix='test')
  expected = {'test_metrics.json', 'test_video_scores.npz', 'test_per_class_ap.csv'}
  assert sorted(os.listdir(tmp_path)) == sorted(expected) == sorted(os.path.basename(p) for p in paths.values())
  with open(tmp_path / 'test_per_class_ap.csv', newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['class_index', 'class_name', 'num_positive_videos', 'average_precision']
  assert [r[:3] for r in rows[1:]] == [['0', 'w', '2'], ['1', 'x', '2'], ['2', 'y', '2'], ['3', 'z', '0']]
  assert rows[4][3] == 'nan'
  loaded = ev.load_results(str(tmp_path), prefix='test')
  assert loaded.multi_label and loaded.view_pooling == 'max' and loaded.class_names == tuple('wxyz')
  assert loaded.metrics == result.metrics
  for field in ('video_ids', 'video_scores', 'video_labels', 'video_num_views', 'per_class_ap'):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(result, field), err_msg=field)
  assert 'mAP' in loaded.summary() and 'max over views' in loaded.summary()


def test_single_label_videos_can_be_pooled_by_max_too():
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=5)
  result = ev.evaluate(cases.fake_predict(), batches, num_classes=cases.NUM_CLASSES, view_pooling='max')
  expected = [np.max([cases.TABLE[key] for key in cases.TABLE if key[0] == n], axis=0) for n in 'abcdef']
  np.testing.assert_array_equal(result.video_scores, expected)
  assert result.view_pooling == 'max' and not result.multi_label
  # The default stays the mean of the paper's Kinetics test.
  assert ev.evaluate(cases.fake_predict(), batches, num_classes=cases.NUM_CLASSES).view_pooling == 'mean'
  with pytest.raises(ValueError, match=r"view_pooling='median': use one of \('mean', 'max'\)"):
    ev.evaluate(cases.fake_predict(), batches, num_classes=cases.NUM_CLASSES, view_pooling='median')
