"""Evaluation with a fake model whose outputs are known exactly: metrics, summary, padding, layouts, bad inputs."""

import numpy as np
import pytest

from nonlocal_jax import evaluation as ev
from tests.evaluation import cases
from tests.evaluation.cases import NUM_CLASSES


def _evaluate(batches, **kwargs):
  return ev.evaluate(cases.fake_predict(), batches, num_classes=NUM_CLASSES, **kwargs)


def test_exact_metrics_of_a_known_model():
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=5)
  result = _evaluate(batches)
  assert result.metrics == cases.EXPECTED_METRICS
  assert all(type(v) is float for k, v in result.metrics.items() if not k.startswith('num_'))
  assert type(result.metrics['num_videos']) is int and type(result.metrics['num_views']) is int
  np.testing.assert_array_equal(result.per_class_accuracy, cases.EXPECTED_PER_CLASS)
  np.testing.assert_array_equal(result.confusion, cases.expected_confusion())
  # The confusion matrix breaks ties as top-1 does: its trace is the number of top-1 videos.
  assert np.trace(result.confusion) == 3
  ids = cases.IDS
  names = sorted('abcdef', key=lambda n: ids[n])
  np.testing.assert_array_equal(result.video_ids, [ids[n] for n in names])
  np.testing.assert_array_equal(result.video_scores, [cases.VIDEO_SCORES[n] for n in names])
  np.testing.assert_array_equal(result.video_labels, [cases.LABELS[n] for n in names])
  np.testing.assert_array_equal(result.video_num_views, [cases.NUM_VIEWS[n] for n in names])
  assert result.summary() == ('video top-1 50.00% top-5 83.33% over 1-4 views per video, clip top-1 33.33% top-5 '
                              '66.67%, mean class accuracy 40.00% (6 videos, 12 views)')


def test_views_of_a_video_in_different_batches_and_out_of_order():
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=5)
  # The case is what it claims: video c (id 13) in all three batches, a's view 1 before its view 0.
  assert [13 in b['video_id'][b['mask']] for b in batches] == [True, True, True]
  a_views = [v for b in batches for i, v, m in zip(b['video_id'], b['view_index'], b['mask']) if m and i == 11]
  assert a_views == [1, 0]
  reference = _evaluate(batches)
  for order, size in ((cases.VIEW_ORDER[::-1], 1), (sorted(cases.VIEW_ORDER), 12), (cases.VIEW_ORDER[3:] +
                                                                                     cases.VIEW_ORDER[:3], 7)):
    cases.assert_same_result(_evaluate(cases.make_batches(order, batch_size=size)), reference)


def test_padding_rows_are_ignored():
  # The pipeline's padding (id 0, label 0; the model then predicts class 0) would add a correct 7th video.
  padded = cases.make_batches(cases.VIEW_ORDER, batch_size=5, pad_batches=2)
  assert sum((~b['mask']).sum() for b in padded) == 3 + 10
  cases.assert_same_result(_evaluate(padded), _evaluate(cases.make_batches(cases.VIEW_ORDER, batch_size=12)))
  # Padding that names a real video with another label and has NaN scores is ignored all the same.
  hostile = cases.make_batches(cases.VIEW_ORDER, batch_size=5)
  hostile[-1]['video_id'][~hostile[-1]['mask']] = 11  # Video a, label 0.
  hostile[-1]['label'][~hostile[-1]['mask']] = 4
  predict = cases.fake_predict()

  def nan_on_padding(batch):
    scores = predict(batch)
    scores[~batch['mask']] = np.nan
    return scores

  result = ev.evaluate(nan_on_padding, hostile, num_classes=NUM_CLASSES)
  assert result.metrics == cases.EXPECTED_METRICS


@pytest.mark.parametrize('keep_device_axis', [False, True])
def test_leading_device_axis_is_flattened(keep_device_axis):
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=8, devices=2, pad_batches=1)
  assert batches[0]['label'].shape == (2, 4) and batches[1]['mask'].sum() == 4
  predict = cases.fake_predict(keep_device_axis=keep_device_axis)
  seen = []

  def recording_predict(batch):
    seen.append(batch['clips'].shape)
    return predict(batch)

  result = ev.evaluate(recording_predict, batches, num_classes=NUM_CLASSES)
  # predict_fn gets each batch as the iterable yields it, device axis included.
  assert seen == [(2, 4, 2, 1, 1, 3)] * 3
  cases.assert_same_result(result, _evaluate(cases.make_batches(cases.VIEW_ORDER, batch_size=12)))


@pytest.mark.parametrize('same_batch', [False, True])
def test_views_that_disagree_on_the_label_name_the_video(same_batch):
  views = [('a', 0), ('c', 0), ('c', 1), ('b', 0)] if same_batch else cases.VIEW_ORDER
  batches = cases.make_batches(views, batch_size=5)
  # Give one view of video c (id 13, label 5) label 4, in the last batch that holds c.
  batch = [b for b in batches if 13 in b['video_id']][-1]
  row = np.flatnonzero(batch['video_id'] == 13)[-1]
  batch['label'][row] = 4
  with pytest.raises(ValueError, match=r"Video 13 has views with different labels \((5 and 4|4 and 5)\)"):
    _evaluate(batches)


def test_bad_inputs_fail_with_a_message():
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=5)
  with pytest.raises(ValueError, match=r'shape \(5, 5\) for a batch of 5 examples: expected \(5, 6\)'):
    ev.evaluate(lambda b: np.zeros((5, 5)), batches, num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match=r'Label 5 of video 13 is outside \[0, 5\)'):
    ev.evaluate(lambda b: np.zeros((5, 5)), batches, num_classes=5)

  def nan_for_b(batch):
    scores = cases.fake_predict()(batch)
    scores[batch['video_id'] == 12] = np.nan
    return scores

  with pytest.raises(ValueError, match='non-finite scores for video 12'):
    ev.evaluate(nan_for_b, batches, num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match='no unmasked views'):
    _evaluate(cases.make_batches([], batch_size=5, pad_batches=2))
  with pytest.raises(ValueError, match='none of the id fields'):
    ev.evaluate(lambda b: np.zeros((5, 6)), [{k: v for k, v in batches[0].items() if k != 'video_id'}],
                num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match='3 class names for 6 classes'):
    _evaluate(batches, class_names=['x', 'y', 'z'])


@pytest.mark.parametrize('ids', [np.array([b'clip_a'] * 5), np.array(['a'] * 5), np.full(5, 11.0),
                                 np.array([11] * 5, object)])
def test_ids_that_are_not_integers_fail_in_one_sentence(ids):
  batch = cases.make_batches(cases.VIEW_ORDER[:5], batch_size=5)[0]
  batch['video_id'] = ids
  with pytest.raises(ValueError, match=r"^Batch field 'video_id' holds \S+ values: ids must be integers \(one per "
                                       r'video, shared by its views\), as nonlocal_jax.data.create_eval_dataset '
                                       r'makes them\.$'):
    _evaluate([batch])


def test_image_ids_and_batches_without_mask():
  batch = {'image': np.zeros((3, 2, 2, 3)), 'image_id': np.array([5, 6, 5]), 'label': np.array([1, 0, 1])}
  scores = np.array([[.25, .75], [.5, .5], [.5, .5]])
  result = ev.evaluate(lambda b: scores, [batch], num_classes=2)
  # Image 5: mean (.375, .625), correct. Image 6: tie, wrong. Views: 1 correct of 3. Top-5 of 2 classes would
  # always be 100 %: it is left out.
  assert result.metrics == {'clip_top1': 1 / 3, 'video_top1': .5, 'mean_class_accuracy': .5, 'num_videos': 2,
                            'num_views': 3}
  np.testing.assert_array_equal(result.confusion, [[0, 1], [0, 1]])
  assert result.summary() == ('video top-1 50.00% over 1-2 views per video, clip top-1 33.33%, mean class accuracy '
                              '50.00% (2 videos, 3 views)')


def test_one_view_per_video_is_not_called_multi_view():
  batch = {'video_id': np.array([3, 1, 2, 4]), 'label': np.array([0, 1, 1, 0]), 'mask': np.array([1, 1, 1, 0])}
  scores = np.array([[.75, .25], [.25, .75], [.5, .5], [0., 1.]])
  result = ev.evaluate(lambda b: scores, [batch], num_classes=2, class_names=['different', 'same'])
  # Video 3 right, video 1 right, video 2 a tie (wrong); video 4 is padding.
  assert result.metrics == {'clip_top1': 2 / 3, 'video_top1': 2 / 3, 'mean_class_accuracy': .75, 'num_videos': 3,
                            'num_views': 3}
  assert result.summary() == 'top-1 66.67% (1 view per video), mean class accuracy 75.00% (3 videos)'
  assert result.class_names == ('different', 'same') and result.class_labels() == ['different', 'same']
  assert ev.evaluate(lambda b: scores, [batch], num_classes=2).class_labels() == ['0', '1']


def test_same_number_of_views_for_every_video_is_named_once():
  views = [(name, v) for name in 'abf' for v in range(2)]
  table = {('f', 1): cases.TABLE[('f', 0)]}
  batches = cases.make_batches(views, batch_size=6)
  predict = cases.fake_predict()

  def with_second_view_of_f(batch):
    scores = predict(batch)
    scores[(batch['video_id'] == cases.IDS['f']) & (batch['view_index'] == 1)] = table[('f', 1)]
    return scores

  result = ev.evaluate(with_second_view_of_f, batches, num_classes=NUM_CLASSES)
  assert result.views_per_video() == '2 views'
  assert result.summary().startswith('video top-1 66.67% top-5 100.00% over 2 views per video, clip top-1 ')

