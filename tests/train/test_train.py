"""The training library in this process: outputs of a run, evaluation of a checkpoint, NaN guard, init_checkpoint,
the optimiser's parameter groups and schedule, and the start-up errors."""

import json
import os
import re

import jax
import numpy as np
import pytest

from nonlocal_jax import checkpoint, optim, train
from tests.train import helpers


def test_run_writes_checkpoints_metrics_config_and_eval(reference_run):
  workdir = reference_run['workdir']
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert steps == [2, 4, 6, 8, 10]
  assert json.load(open(os.path.join(workdir, 'config.json')))['train']['num_steps'] == 10
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  metrics = json.load(open(os.path.join(workdir, 'eval', 'test_step10_metrics.json')))
  text = json.dumps(metrics)
  assert '"num_videos": 8' in text and '"num_views": 16' in text
  assert all(np.all(np.isfinite(v)) for v in reference_run['params'].values())


def test_eval_of_a_named_checkpoint(reference_run):
  config = reference_run['config'].copy_and_resolve_references()
  config.eval_step = 4
  result = train.evaluate_checkpoint(config, reference_run['workdir'])
  assert result.metrics['num_videos'] == 8 and result.metrics['num_views'] == 16
  assert os.path.exists(os.path.join(reference_run['workdir'], 'eval', 'test_step10_metrics.json'))
  config.eval_step = 7
  with pytest.raises(train.ConfigError, match=r'eval_step=7 has no checkpoint.*\[2, 4, 6, 8, 10\]'):
    train.evaluate_checkpoint(config, reference_run['workdir'])


def test_rerun_of_a_finished_run_does_not_train_again(reference_run):
  config = reference_run['config'].copy_and_resolve_references()
  config.train.eval_at_end = False
  state = train.train_and_evaluate(config, reference_run['workdir'])
  assert int(state.step) == 10
  flat = train.params_digest(state)
  for k, v in flat.items():
    assert v == pytest.approx(float(np.sum(reference_run['params'][f'params/{k}'], dtype=np.float64)), rel=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  # Rate 0.1 for 3 steps, then 1e30: the loss of step 4 overflows.
  config = helpers.load_config(**{'train.num_steps': 8, 'train.checkpoint_every_steps': 2,
                                  'train.step_boundaries': (3,), 'train.eval_at_end': False})
  config.train.step_factor = 1e31
  config.data.data_dir = data_dir
  workdir = str(tmp_path / 'nan')
  with pytest.raises(train.NonFiniteLossError) as info:
    train.train_and_evaluate(config, workdir)
  found = re.search(r'loss became (nan|inf) at step (\d+); the last good checkpoint \(step (\d+)\) is kept',
                    str(info.value))
  assert found, str(info.value)
  bad, kept = int(found.group(2)), int(found.group(3))
  assert kept < bad <= 8
  assert max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))) == kept
  params = helpers.final_params(workdir)
  assert all(np.all(np.isfinite(v)) for v in params.values())


def test_init_checkpoint_loads_the_baseline_and_keeps_new_blocks_identity(data_dir, tmp_path):
  baseline = str(tmp_path / 'baseline')
  config = helpers.load_config('test', 'blocks=none', **{'train.num_steps': 2, 'train.eval_at_end': False})
  config.data.data_dir = data_dir
  train.train_and_evaluate(config, baseline)
  loaded = helpers.final_params(baseline)

  nl = helpers.load_config('test', **{'train.num_steps': 1, 'train.eval_at_end': False})
  nl.data.data_dir = data_dir
  nl.train.init_checkpoint = baseline
  mesh = train.startup(nl, str(tmp_path / 'nl'))
  trainer = train.Trainer(nl, mesh)
  fresh = trainer.init_state()
  state = train._init_from_checkpoint(fresh, baseline, mesh)  # pylint: disable=protected-access
  params = checkpoint.merge_matching(jax.device_get(fresh.params), {})[0]
  import flax  # pylint: disable=g-import-not-at-top
  now = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep='/')
  before = flax.traverse_util.flatten_dict(params, sep='/')
  new = [k for k in now if k.startswith('nonlocal_')]
  assert new, 'the NL config has a non-local block'
  for k, v in now.items():
    if k in new:
      np.testing.assert_array_equal(v, before[k])  # identity init kept
    else:
      np.testing.assert_array_equal(v, loaded[f'params/{k}'])


def test_weight_decay_groups_lr_multipliers_and_freeze():
  config = helpers.load_config()
  params = {'conv1': {'kernel': np.ones((2,), np.float32)}, 'res_conv1_bn': {'scale': np.ones((2,), np.float32),
            'bias': np.ones((2,), np.float32)}, 'pred': {'kernel': np.ones((2,), np.float32),
                                                         'bias': np.ones((2,), np.float32)},
            'nonlocal_conv3_0': {'bn': {'scale': np.ones((2,), np.float32)}}}
  mask = optim.weight_decay_mask(config.train, params)
  assert mask == {'conv1': {'kernel': True}, 'res_conv1_bn': {'scale': False, 'bias': False},
                  'pred': {'kernel': True, 'bias': False}, 'nonlocal_conv3_0': {'bn': {'scale': False}}}
  config.train.lr_multipliers = (('pred/.*', 10.0),)
  config.train.freeze = 'conv1/.*'
  config.train.momentum, config.train.weight_decay, config.train.warmup_steps = 0.0, 0.0, 0
  tx, schedule = optim.create_optimizer(config.train, params, 16)
  grads = jax.tree.map(np.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(schedule(0))
  assert float(updates['conv1']['kernel'][0]) == 0.0
  assert float(updates['pred']['kernel'][0]) == pytest.approx(-10 * lr)
  assert float(updates['res_conv1_bn']['scale'][0]) == pytest.approx(-lr)


def test_adamw_first_steps_match_a_hand_computation():
  # Adam's first update is -lr·g/(|g| + eps) per element (bias-corrected moments equal g and g²), the decoupled
  # decay adds -lr·wd·w only where the mask allows, and the lr multiplier scales the whole update.
  config = helpers.load_config()
  config.train.optimizer, config.train.nesterov = 'adamw', False
  config.train.weight_decay, config.train.warmup_steps, config.train.schedule = 0.1, 0, 'constant'
  config.train.lr_multipliers = (('pred/.*', 3.0),)
  params = {'conv1': {'kernel': np.array([2.0, -1.0], np.float32)},
            'pred': {'bias': np.array([0.5, 0.5], np.float32)}}
  grads = {'conv1': {'kernel': np.array([0.3, -4.0], np.float32)}, 'pred': {'bias': np.array([-2.0, 1e-3], np.float32)}}
  tx, schedule = optim.create_optimizer(config.train, params, 16)
  updates, state = tx.update(grads, tx.init(params), params)
  lr = float(schedule(0))
  np.testing.assert_allclose(updates['conv1']['kernel'], -lr * (np.sign([0.3, -4.0]) + 0.1 * np.array([2.0, -1.0])),
                             rtol=1e-5)
  np.testing.assert_allclose(updates['pred']['bias'], -3 * lr * np.sign([-2.0, 1e-3]), rtol=1e-4)
  # Second step with the same gradient: the moments stay g and g², so the Adam direction is still sign(g).
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['pred']['bias'], -3 * lr * np.sign([-2.0, 1e-3]), rtol=1e-4)


def test_unknown_optimizer_is_refused():
  config = helpers.load_config()
  config.train.optimizer = 'lamb'
  with pytest.raises(ValueError, match="config.train.optimizer 'lamb'"):
    optim.create_optimizer(config.train, {'w': np.ones(2, np.float32)}, 16)


def test_paper_schedule_with_linear_scaling_and_warmup():
  config = helpers.load_config('kinetics_nl')
  schedule = optim.learning_rate_schedule(config.train, 64)
  assert [float(schedule(s)) for s in (0, 149_999, 150_000, 300_000)] == pytest.approx([0.01, 0.01, 1e-3, 1e-4])
  assert float(optim.learning_rate_schedule(config.train, 8)(0)) == pytest.approx(0.00125)
  config.train.warmup_steps = 100
  schedule = optim.learning_rate_schedule(config.train, 64)
  assert float(schedule(50)) == pytest.approx(0.005)
  assert float(schedule(150_000)) == pytest.approx(1e-3)
  config.train.schedule = 'cosine'
  assert float(optim.learning_rate_schedule(config.train, 64)(400_000)) == pytest.approx(0.0, abs=1e-9)


def test_accumulation_matches_the_full_batch_without_batchnorm(data_dir):
  # With frozen BN (affine) two micro-batches of 8 give the gradient of one batch of 16.
  from nonlocal_jax import parallel  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  results = []
  for n in (1, 2):
    config = helpers.load_config(**{'train.accumulation_steps': n})
    config.model.norm = 'affine'
    config.data.data_dir = data_dir
    mesh = parallel.make_mesh()
    trainer = train.Trainer(config, mesh)
    state = trainer.init_state()
    batch = next(pipeline.create_train_iterator(config.data, seed=0))
    state, metrics = trainer.train_step(state, parallel.shard_batch(batch, mesh))
    results.append((jax.device_get(state.params), float(metrics['loss'])))
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[0][0], results[1][0])


def test_precise_bn_replaces_running_averages(reference_run, data_dir):
  from nonlocal_jax import parallel  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = helpers.load_config()
  config.data.data_dir = data_dir
  mesh = parallel.make_mesh()
  trainer = train.Trainer(config, mesh)
  state = trainer.init_state()
  batches = pipeline.create_train_iterator(config.data, seed=0)
  after = trainer.precise_bn(state, batches, 2)
  mean = np.asarray(after.batch_stats['res_conv1_bn']['mean'])
  assert not np.allclose(mean, np.asarray(state.batch_stats['res_conv1_bn']['mean']))
  # The full-split batch is the same set each time, so the estimate equals one batch's statistics.
  once = trainer.precise_bn(state, pipeline.create_train_iterator(config.data, seed=0), 1)
  np.testing.assert_allclose(mean, np.asarray(once.batch_stats['res_conv1_bn']['mean']), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('change, message', [
    ({'train.accumulation_steps': 3}, r'global_batch_size=16 must be a multiple of the 1 devices × '
                                      r'train.accumulation_steps=3'),
    ({'data.eval_global_batch_size': 0}, r'eval_global_batch_size=0 must be a multiple'),
    ({'model.num_classes': 5}, r'num_classes=5 but dataset .* has 2 classes'),
    ({'train.schedule': 'linear'}, r"schedule='linear' must be 'step', 'cosine' or 'constant'"),
    ({'train.freeze': '(['}, r'train.freeze holds an invalid regex'),
    ({'data.name': 'kinetics400'}, r"Dataset 'kinetics/400' is not prepared .*python -m nonlocal_jax.data.prepare "
                                   r'kinetics400'),
    ({'train.init_checkpoint': '/nonexistent/run'}, r'init_checkpoint=/nonexistent/run is not a directory'),
    ({'model.nonlocal_pairwise': 'cosine'}, r'nonlocal_pairwise must be one of'),
])
def test_config_errors_name_the_problem(data_dir, tmp_path, change, message):
  config = helpers.load_config(**change)
  config.data.data_dir = data_dir
  with pytest.raises(train.ConfigError, match=message):
    train.startup(config, str(tmp_path))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(train.ConfigError, match=r'workdir .*file/run is not writable'):
    train.check_workdir(str(blocker / 'run'))
