"""The evaluator on the batches the real input pipeline yields (mocked UCF101): device layout, padding, processes."""

import numpy as np
import pytest

from nonlocal_jax import evaluation as ev
from tests.data.conftest import small_video_config
from tests.evaluation import cases

NUM_CLASSES = 101  # UCF101.


@pytest.fixture(name='tf_data')
def _tf_data():
  # Imported here, not at the top: TensorFlow costs seconds, and every xdist worker collects every module.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import eval_pipeline, layout  # pylint: disable=g-import-not-at-top
  return tfds, eval_pipeline, layout


def _predict(batch):
  # Views 0-3 of every video say its class; views 4-5 say the next class. Reads the label: a fake model.
  label = np.asarray(batch['label']).reshape(-1)
  view = np.asarray(batch['view_index']).reshape(-1)
  assert batch['clips'].shape[-4:] == (8, 64, 64, 3)
  predicted = np.where(view < 4, label, (label + 1) % NUM_CLASSES)
  return np.eye(NUM_CLASSES, dtype=np.float32)[predicted]


def _check(result, num_videos=3):
  # Videos × 2 clips × 3 crops; per video 4 of 6 views right, mean score 4/6 on the class and 2/6 on the next.
  # A wrong view scores 0 on the true class, tied with 99 others: not even top-5 (ties count against).
  assert result.metrics == {'clip_top1': 4 / 6, 'clip_top5': 4 / 6, 'video_top1': 1.0, 'video_top5': 1.0,
                            'mean_class_accuracy': 1.0, 'num_videos': num_videos, 'num_views': 6 * num_videos}
  np.testing.assert_array_equal(result.video_num_views, [6] * num_videos)
  rows = np.arange(num_videos)
  np.testing.assert_allclose(result.video_scores[rows, result.video_labels], 4 / 6)
  np.testing.assert_allclose(result.video_scores[rows, (result.video_labels + 1) % NUM_CLASSES], 2 / 6)
  assert result.video_scores.sum() == pytest.approx(num_videos)


def test_pipeline_batches_with_a_device_axis(tf_data):
  tfds, eval_pipeline, layout = tf_data
  c = small_video_config(name='ucf101', eval_split='test', test_num_clips=2, test_num_crops=3)
  with tfds.testing.mock_data(num_examples=3):
    evaluation = eval_pipeline.create_eval_dataset(c, layout=layout.ProcessLayout(0, 1, 2))
    # The evaluation takes batches with a leading device axis too (as a pmap-style caller would pass them).
    batches = [{k: v.reshape((2, -1) + v.shape[1:]) for k, v in b.items()} for b in evaluation]
  # 18 views in batches of 4 as (2 devices, 2): the last batch holds 2 views and 2 padding rows.
  assert batches[0]['label'].shape == (2, 2) and len(batches) == 5 and batches[-1]['mask'].sum() == 2
  result = ev.evaluate(_predict, batches, num_classes=NUM_CLASSES)
  _check(result)
  np.testing.assert_array_equal(result.video_ids, [0, 1, 2])


def test_pipeline_shares_of_two_processes(tf_data):
  tfds, eval_pipeline, layout = tf_data
  c = small_video_config(name='ucf101', eval_split='test', test_num_clips=2, test_num_crops=3)
  with tfds.testing.mock_data(num_examples=3):
    shares = [list(eval_pipeline.create_eval_dataset(c, layout=layout.ProcessLayout(p, 2, 1))) for p in range(2)]
  # (Mocked data does not split: each process reads its own 3 videos, with ids interleaved across processes.)
  share_ids = [{i for b in share for i in b['video_id'][b['mask']]} for share in shares]
  assert share_ids == [{0, 2, 4}, {1, 3, 5}]
  processes = cases.FakeProcesses(2)
  results = processes.run(lambda p: ev.evaluate(_predict, shares[p], num_classes=NUM_CLASSES,
                                                gather=processes.gather_for(p)))
  for result in results:
    assert isinstance(result, ev.EvalResult), result
    _check(result, num_videos=6)
    np.testing.assert_array_equal(result.video_ids, np.arange(6))
