"""The training loop in this process: outputs of a run, evaluation of a checkpoint, rerun of a finished run, the
NaN guard and init_checkpoint."""

import json
import os
import re

import flax
import jax
import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.training import checkpoint, loop, parallel
from tests.training import helpers


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


def test_eval_of_a_named_checkpoint(reference_run, tmp_path):
  workdir = helpers.copy_run(reference_run, tmp_path)
  config = reference_run['config'].copy_and_resolve_references()
  config.eval_step = 4
  result = training.evaluate_checkpoint(config, workdir)
  assert result.metrics['num_videos'] == 8 and result.metrics['num_views'] == 16
  assert os.path.exists(os.path.join(workdir, 'eval', 'test_step4_metrics.json'))
  assert os.path.exists(os.path.join(workdir, 'eval', 'test_step10_metrics.json'))
  config.eval_step = 7
  with pytest.raises(training.ConfigError, match=r'eval_step=7 has no checkpoint.*\[2, 4, 6, 8, 10\]'):
    training.evaluate_checkpoint(config, workdir)


def test_rerun_of_a_finished_run_does_not_train_again(reference_run, tmp_path):
  config = reference_run['config'].copy_and_resolve_references()
  config.train.eval_at_end = False
  state = training.train_and_evaluate(config, helpers.copy_run(reference_run, tmp_path))
  assert int(state.step) == 10
  flat = helpers.params_digest(state)
  for k, v in flat.items():
    assert v == pytest.approx(float(np.sum(reference_run['params'][f'params/{k}'], dtype=np.float64)), rel=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  # A rate of 1e6 (config.train.step_factor may no longer raise the rate mid-run): a few steps pass, a
  # checkpoint is written, then the updates overflow.
  config = helpers.load_config(**{'train.num_steps': 8, 'train.checkpoint_every_steps': 2,
                                  'train.base_learning_rate': 1e6, 'train.eval_at_end': False})
  config.data.data_dir = data_dir
  workdir = str(tmp_path / 'nan')
  with pytest.raises(training.NonFiniteLossError) as info:
    training.train_and_evaluate(config, workdir)
  found = re.search(r'became NaN or Inf at step (\d+).*; a rerun resumes from the latest checkpoint, step (\d+) in ',
                    str(info.value))
  assert found, str(info.value)
  bad, kept = int(found.group(1)), int(found.group(2))
  assert kept < bad <= 8
  assert max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))) == kept
  params = helpers.final_params(workdir)
  assert all(np.all(np.isfinite(v)) for v in params.values())


def test_init_checkpoint_loads_the_baseline_and_keeps_new_blocks_identity(data_dir, tmp_path):
  baseline = str(tmp_path / 'baseline')
  config = helpers.load_config('test', 'blocks=none', **{'train.num_steps': 2, 'train.eval_at_end': False})
  config.data.data_dir = data_dir
  training.train_and_evaluate(config, baseline)
  loaded = helpers.final_params(baseline)

  nl = helpers.load_config('test', **{'train.num_steps': 1, 'train.eval_at_end': False})
  nl.data.data_dir = data_dir
  nl.train.init_checkpoint = baseline
  mesh = training.startup(nl, str(tmp_path / 'nl'))
  trainer = training.Trainer(nl, mesh)
  fresh = trainer.init_state()
  state = loop._init_from_checkpoint(fresh, baseline, mesh)  # pylint: disable=protected-access
  params = checkpoint.merge_matching(jax.device_get(fresh.params), {})[0]
  now = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep='/')
  before = flax.traverse_util.flatten_dict(params, sep='/')
  new = [k for k in now if k.startswith('nonlocal_')]
  assert new, 'the NL config has a non-local block'
  for k, v in now.items():
    if k in new:
      np.testing.assert_array_equal(v, before[k])  # identity init kept
    else:
      np.testing.assert_array_equal(v, loaded[f'params/{k}'])


def test_prefetch_to_devices_keeps_the_order_and_puts_batches_ahead_on_the_mesh():
  # A host stream that records how far it was read: when step s gets its batch, s+1 and s+2 were already taken.
  mesh = parallel.make_mesh()
  taken = []

  def host_batches():
    for i in range(5):
      taken.append(i)
      yield {'label': np.full((2,), i, np.int32)}
  stream = loop._prefetch_to_devices(host_batches(), mesh, depth=2)
  seen = []
  for batch in stream:
    assert batch['label'].sharding == parallel.batch_sharded(mesh)
    seen.append(int(np.asarray(batch['label'])[0]))
    assert len(taken) == min(len(seen) + 2, 5)
  assert seen == [0, 1, 2, 3, 4]
