"""The multi-label path end to end on a tiny unpaired_digits set: multi-hot batches, the sigmoid loss and hit@1 of
the train step, and a run whose test is scored by mAP over views pooled by max."""

import json
import logging
import os

import jax
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from nonlocal_jax import evaluation
from nonlocal_jax import training
from nonlocal_jax.data import builders, device_input, prepare, synthetic, train_pipeline
from nonlocal_jax.training import parallel
from tests.training import helpers

NAME = 'synthetic_long_range/unpaired_digits'


@pytest.fixture(scope='module')
def multi_label_data_dir(tmp_path_factory):
  """configs/test.py's tiny synthetic variant (16 train, 8 test clips of 4×16×16), of the multi-label task."""
  path = str(tmp_path_factory.mktemp('multi_label_data'))
  prepare.prepare_synthetic(NAME, path, **dict(helpers.load_config().data.synthetic.items()))
  return path


def _config(data_dir, **overrides):
  # Two steps: the train step the first test compiles is the one the run of the last test loads from the cache.
  config = helpers.load_config(**{'data.name': NAME, 'model.num_classes': 10, 'train.num_steps': 2,
                                  'train.checkpoint_every_steps': 2, **overrides})
  config.data.data_dir = data_dir
  return config


def test_batches_carry_the_stored_classes_as_multi_hot_rows(multi_label_data_dir):
  config = _config(multi_label_data_dir)
  features = builders.dataset_features(builders.prepared_builder(config.data))
  assert features.multi_label and features.num_classes == 10
  batch = next(train_pipeline.create_train_iterator(config.data, seed=0))
  assert batch['label'].shape == (16, 10) and batch['label'].dtype == np.float32
  # The batch is the whole (shuffled) train split: its rows are the generated clips' labels, in some order.
  c = synthetic.synthetic_config('unpaired_digits', **{k: v for k, v in config.data.synthetic.items()
                                                       if k != 'same'})
  expected = np.zeros((16, 10), np.float32)
  for i in range(16):
    expected[i, synthetic.generate_clip(c, 'train', i)['label']] = 1
  assert sorted(map(tuple, batch['label'])) == sorted(map(tuple, expected))


def test_the_train_step_takes_the_sigmoid_loss_and_hit_at_1_of_multi_hot_labels(multi_label_data_dir):
  config = _config(multi_label_data_dir)
  mesh = parallel.make_mesh()
  trainer = training.Trainer(config, mesh)
  state = trainer.init_state()
  batch = next(train_pipeline.create_train_iterator(config.data, seed=0))
  # The step's forward pass on one device: the whole batch, normalised by its own statistics, no dropout.
  # Jitted: op by op, the forward pass alone took most of this test's half minute.
  forward = jax.jit(lambda variables, b: trainer.model.apply(
      variables, device_input.network_input(config.data)(b), train=True, mutable=['batch_stats'],
      rngs={'dropout': jax.random.PRNGKey(0)}))
  logits, _ = forward(trainer.variables(state), batch)
  logits = np.asarray(logits, np.float64)
  _, metrics = trainer.train_step(state, parallel.shard_batch(batch, mesh))
  y = batch['label']
  # Per-class binary cross-entropy of the sigmoid, averaged over clips and classes, written out in NumPy.
  p = 1 / (1 + np.exp(-logits))
  expected_loss = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
  assert float(metrics['loss']) == pytest.approx(expected_loss, rel=1e-5)
  hits = y[np.arange(len(y)), logits.argmax(axis=1)] == 1  # No ties among random-init logits.
  assert float(metrics['hit1']) == pytest.approx(hits.mean())
  assert 'top1' not in metrics


def test_a_run_is_tested_by_map_of_views_pooled_by_max(multi_label_data_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='nonlocal_jax.console')
  config = _config(multi_label_data_dir)
  training.train_and_evaluate(config, str(tmp_path))
  progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step 2/2')]
  assert len(progress) == 1 and ' hit@1 ' in progress[0] and 'top1' not in progress[0]
  files = sorted(os.listdir(tmp_path / 'eval'))
  assert files == ['test_step2_metrics.json', 'test_step2_per_class_ap.csv', 'test_step2_video_scores.npz']
  result = evaluation.load_results(str(tmp_path / 'eval'), 'test_step2')
  assert result.view_pooling == 'max' and result.video_num_views.tolist() == [2] * 8  # test.py: 2 clips × 1 crop.
  labels, scores = result.video_labels, result.video_scores
  keep = labels.any(axis=1)
  classes = np.flatnonzero(labels[keep].any(axis=0))
  reference = np.mean([average_precision_score(labels[keep, k], scores[keep, k]) for k in classes])
  with open(tmp_path / 'eval' / 'test_step2_metrics.json') as f:
    metrics = json.load(f)
  assert metrics['video_map'] == pytest.approx(reference, abs=1e-12)
  assert metrics['map_classes'] == len(classes) and metrics['map_videos'] == keep.sum()
  assert np.all((scores > 0) & (scores < 1))  # Per-class sigmoids, not a softmax over the 10 classes.
  assert not np.allclose(scores.sum(axis=1), 1.0)
