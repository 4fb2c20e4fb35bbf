"""The Trainer's steps: gradient accumulation, precise BatchNorm, and the train step's donated state."""

import jax
import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.data import fake, train_pipeline
from nonlocal_jax.training import parallel
from tests.training import helpers


def test_accumulation_matches_the_full_batch_without_batchnorm(data_dir):
  # With frozen BN (affine) two micro-batches of 8 give the gradient of one batch of 16.
  results = []
  for n in (1, 2):
    config = helpers.load_config(**{'train.accumulation_steps': n})
    config.model.norm = 'affine'
    config.data.data_dir = data_dir
    mesh = parallel.make_mesh()
    trainer = training.Trainer(config, mesh)
    state = trainer.init_state()
    batch = next(train_pipeline.create_train_iterator(config.data, seed=0))
    state, metrics = trainer.train_step(state, parallel.shard_batch(batch, mesh))
    results.append((jax.device_get(state.params), float(metrics['loss'])))
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[0][0], results[1][0])


def test_precise_bn_replaces_running_averages(data_dir):
  config = helpers.load_config()
  config.data.data_dir = data_dir
  mesh = parallel.make_mesh()
  trainer = training.Trainer(config, mesh)
  state = trainer.init_state()
  batches = train_pipeline.create_train_iterator(config.data, seed=0)
  after = trainer.precise_bn(state, batches, 2)
  mean = np.asarray(after.batch_stats['res_conv1_bn']['mean'])
  assert not np.allclose(mean, np.asarray(state.batch_stats['res_conv1_bn']['mean']))
  # The full-split batch is the same set each time, so the estimate equals one batch's statistics.
  once = trainer.precise_bn(state, train_pipeline.create_train_iterator(config.data, seed=0), 1)
  np.testing.assert_allclose(mean, np.asarray(once.batch_stats['res_conv1_bn']['mean']), rtol=1e-4, atol=1e-5)


def test_train_step_donates_every_state_buffer():
  # Donated, the old state's buffers become the new state's: one copy of the state on the device, not two.
  config = helpers.load_config(**{'data.name': 'fake'})
  mesh = parallel.make_mesh()
  trainer = training.Trainer(config, mesh)
  state = trainer.init_state()
  batch = next(fake.train_iterator(config.data, seed=0, kind='video', num_classes=config.model.num_classes,
                                   sharding=parallel.batch_sharded(mesh)))
  lowered = trainer.train_step.lower(state, batch).as_text()
  # Each donated input that an output may reuse carries tf.aliasing_output; the batch (argument 1) is not donated.
  assert lowered.count('tf.aliasing_output') == len(jax.tree.leaves(state))
  trainer.train_step(state, batch)
  assert all(x.is_deleted() for x in jax.tree.leaves(state))
