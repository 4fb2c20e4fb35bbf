"""The evaluator on the batches the real input pipeline yields (the small synthetic set): device layout, padding,
processes."""

import numpy as np
import pytest

from nonlocal_jax import evaluation as ev
from tests.data.conftest import synthetic_config, synthetic_prepared  # pylint: disable=unused-import
from tests.evaluation import cases

NUM_CLASSES = 2  # same_different.
NUM_VIDEOS = 24  # The small synthetic set's test split.


@pytest.fixture(name='tf_data')
def _tf_data(synthetic_prepared):  # pylint: disable=redefined-outer-name
  # Imported here, not at the top: TensorFlow costs seconds, and every xdist worker collects every module.
  from nonlocal_jax.data import eval_pipeline, layout  # pylint: disable=g-import-not-at-top
  config = synthetic_config(synthetic_prepared, eval_split='test', test_num_clips=2, test_num_crops=3,
                            eval_global_batch_size=4)
  return config, eval_pipeline, layout


def _predict(batch):
  # Views 0-3 of every video say its class; views 4-5 say the next class. Reads the label: a fake model.
  label = np.asarray(batch['label']).reshape(-1)
  view = np.asarray(batch['view_index']).reshape(-1)
  assert batch['clips'].shape[-4:] == (8, 32, 32, 3)
  predicted = np.where(view < 4, label, (label + 1) % NUM_CLASSES)
  return np.eye(NUM_CLASSES, dtype=np.float32)[predicted]


def _check(result, num_videos=NUM_VIDEOS):
  # Videos × 2 clips × 3 crops; per video 4 of 6 views right, mean score 4/6 on the class and 2/6 on the next.
  # With two classes there is no top-5.
  assert result.metrics == {'clip_top1': 4 / 6, 'video_top1': 1.0,
                            'mean_class_accuracy': 1.0, 'num_videos': num_videos, 'num_views': 6 * num_videos}
  np.testing.assert_array_equal(result.video_num_views, [6] * num_videos)
  rows = np.arange(num_videos)
  np.testing.assert_allclose(result.video_scores[rows, result.video_labels], 4 / 6)
  np.testing.assert_allclose(result.video_scores[rows, (result.video_labels + 1) % NUM_CLASSES], 2 / 6)
  assert result.video_scores.sum() == pytest.approx(num_videos)


def test_pipeline_batches_with_a_device_axis(tf_data):
  c, eval_pipeline, layout = tf_data
  c.eval_global_batch_size = 10
  evaluation = eval_pipeline.create_eval_dataset(c, layout=layout.ProcessLayout(0, 1, 2))
  # The evaluation takes batches with a leading device axis too (as a pmap-style caller would pass them).
  batches = [{k: v.reshape((2, -1) + v.shape[1:]) for k, v in b.items()} for b in evaluation]
  # 144 views in batches of 10 as (2 devices, 5): the last batch holds 4 views and 6 padding rows.
  assert batches[0]['label'].shape == (2, 5) and len(batches) == 15 and batches[-1]['mask'].sum() == 4
  result = ev.evaluate(_predict, batches, num_classes=NUM_CLASSES)
  _check(result)
  np.testing.assert_array_equal(result.video_ids, np.arange(NUM_VIDEOS))


def test_pipeline_shares_of_two_processes(tf_data):
  c, eval_pipeline, layout = tf_data
  shares = [list(eval_pipeline.create_eval_dataset(c, layout=layout.ProcessLayout(p, 2, 1))) for p in range(2)]
  # Each process reads 12 of the 24 videos, with ids interleaved across processes.
  share_ids = [{int(i) for b in share for i in b['video_id'][b['mask']]} for share in shares]
  assert share_ids == [set(range(0, 24, 2)), set(range(1, 24, 2))]
  processes = cases.FakeProcesses(2)
  results = processes.run(lambda p: ev.evaluate(_predict, shares[p], num_classes=NUM_CLASSES,
                                                gather=processes.gather_for(p)))
  for result in results:
    assert isinstance(result, ev.EvalResult), result
    _check(result)
    np.testing.assert_array_equal(result.video_ids, np.arange(NUM_VIDEOS))
