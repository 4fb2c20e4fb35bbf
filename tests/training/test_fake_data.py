"""config.data.name='fake': batches generated on the devices (shapes, dtypes, sharding, the same on any device
count), a run through train_and_evaluate that logs clips/s and reads no dataset, and an exact resume."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.data import builders, fake, train_pipeline
from nonlocal_jax.training import checks, loop, parallel
from tests.training import helpers


def _fake_config(**overrides):
  """configs/test.py on fake data: 4 steps, a checkpoint and a progress line every 2."""
  return helpers.load_config(**{'data.name': 'fake', 'train.num_steps': 4, 'train.schedule': 'constant',
                                'train.checkpoint_every_steps': 2, 'train.log_every_steps': 2, **overrides})


def test_fake_batch_shapes_dtypes_sharding_and_steps_differ():
  config = _fake_config()
  d = config.data
  mesh = parallel.make_mesh()
  sharding = parallel.batch_sharded(mesh)
  make = fake.batch_fn(d, kind='video', num_classes=config.model.num_classes, sharding=sharding)
  batch = make(0, 3)
  assert sorted(batch) == ['clips', 'label']
  assert batch['clips'].shape == (d.global_batch_size, d.num_frames, d.crop_size, d.crop_size, 3)
  assert batch['clips'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert batch['clips'].sharding == sharding and batch['label'].sharding == sharding
  labels = np.asarray(batch['label'])
  assert labels.min() >= 0 and labels.max() < config.model.num_classes
  clips = np.asarray(batch['clips'])
  assert abs(clips.mean()) < 0.05 and abs(clips.std() - 1) < 0.05  # Standard normal, like normalised pixels.
  # Another step, another seed: other values.
  assert not np.array_equal(clips, np.asarray(make(0, 4)['clips']))
  assert not np.array_equal(clips, np.asarray(make(1, 3)['clips']))
  image = fake.batch_fn(d, kind='image', num_classes=10, sharding=sharding)(0, 0)
  assert sorted(image) == ['image', 'label'] and image['image'].shape == (d.global_batch_size, 16, 16, 3)


def test_resumed_stream_yields_the_batches_of_the_same_steps():
  config = _fake_config()
  kwargs = dict(seed=0, kind='video', num_classes=2, sharding=parallel.batch_sharded(parallel.make_mesh()))
  fresh = fake.train_iterator(config.data, **kwargs)
  first = [np.asarray(next(fresh)['clips']) for _ in range(4)]
  resumed = np.asarray(next(fake.train_iterator(config.data, start_batch=2, **kwargs))['clips'])
  np.testing.assert_array_equal(resumed, first[2])
  assert not np.array_equal(resumed, first[1])


_SPLIT_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from nonlocal_jax.data import fake
from nonlocal_jax.training import parallel
from tests.training import helpers
config = helpers.load_config(**{{'data.name': 'fake'}})
mesh = parallel.make_mesh()
batch = fake.batch_fn(config.data, kind='video', num_classes=2, sharding=parallel.batch_sharded(mesh))(0, 5)
shards = sorted(batch['clips'].addressable_shards, key=lambda s: s.index[0].start)
print(json.dumps({{'devices': len(mesh.devices.flat), 'rows': [s.data.shape[0] for s in shards],
                  'sums': [float(np.asarray(s.data, np.float64).sum()) for s in shards]}}))
"""


def test_fake_batch_is_split_over_devices_with_the_values_of_one_device():
  config = _fake_config()
  batch = 16
  assert config.data.global_batch_size == batch
  one = np.asarray(fake.batch_fn(config.data, kind='video', num_classes=2,
                                 sharding=parallel.batch_sharded(parallel.make_mesh()))(0, 5)['clips'], np.float64)
  result = subprocess.run([sys.executable, '-c', _SPLIT_SCRIPT.format(root=helpers.ROOT)], env=helpers.env_for(4),
                          cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['devices'] == 4 and out['rows'] == [batch // 4] * 4
  expected = [one[i * 4:(i + 1) * 4].sum() for i in range(4)]
  np.testing.assert_allclose(out['sums'], expected, rtol=1e-6)


def _no_dataset(*args, **kwargs):
  raise AssertionError('a fake run touched the dataset')


@pytest.fixture(scope='module')
def fake_run(tmp_path_factory):
  """A 4-step fake run in this process with every dataset access failing; its config, workdir and console lines."""
  with pytest.MonkeyPatch.context() as patch:
    for module, name in ((builders, 'check_prepared'), (builders, 'num_classes'), (builders, 'prepared_builder'),
                         (train_pipeline, 'create_train_iterator')):
      patch.setattr(module, name, _no_dataset)
    return _run_logged(tmp_path_factory)


def _run_logged(tmp_path_factory):
  base = tmp_path_factory.mktemp('fake')
  config = _fake_config(**{'data.data_dir': str(base / 'data')})
  os.makedirs(config.data.data_dir)
  records = []
  handler = logging.Handler()
  handler.emit = lambda r: records.append(r.getMessage())
  logger = logging.getLogger('nonlocal_jax.console')
  logger.addHandler(handler)
  old_level = logger.level
  logger.setLevel(logging.INFO)
  try:
    state = training.train_and_evaluate(config, str(base / 'work'))
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  return {'config': config, 'workdir': str(base / 'work'), 'lines': records, 'state': state}


def test_fake_run_logs_clips_per_s_reads_no_data_and_skips_evaluation(fake_run):
  config, lines = fake_run['config'], fake_run['lines']
  assert int(fake_run['state'].step) == 4
  assert os.listdir(config.data.data_dir) == []
  progress = [re.search(r'^step (\d+)/4 .*\| ([\d.]+) clips/s ([\d.]+) s/step', l) for l in lines]
  progress = [m for m in progress if m]
  assert [int(m.group(1)) for m in progress] == [2, 4]
  for m in progress:  # clips/s is the batch over the time per step.
    clips_per_s, step_s = float(m.group(2)), float(m.group(3))
    assert clips_per_s > 0
    assert clips_per_s == pytest.approx(config.data.global_batch_size / step_s, rel=0.05, abs=0.2)
  assert sum(l.startswith('No evaluation:') for l in lines) == 1
  assert not os.path.isdir(os.path.join(fake_run['workdir'], 'eval'))
  assert sorted(int(s) for s in os.listdir(os.path.join(fake_run['workdir'], 'checkpoints')) if s.isdigit()) == [2, 4]


def test_resumed_fake_run_ends_bit_exactly_as_the_uninterrupted_one(fake_run, tmp_path, monkeypatch):
  uninterrupted = helpers.final_params(fake_run['workdir'])
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(fake_run['workdir'], resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '4'))  # As if the run had stopped after step 2.
  config = fake_run['config']
  training.train_and_evaluate(config, resumed)
  helpers.assert_same(helpers.final_params(resumed), uninterrupted, rtol=0, atol=0)

  # The fault this guards against: a resumed stream restarting at batch 0 ends elsewhere.
  restarted = str(tmp_path / 'restarted')
  shutil.copytree(fake_run['workdir'], restarted)
  shutil.rmtree(os.path.join(restarted, 'checkpoints', '4'))
  batches = loop._train_batches  # pylint: disable=protected-access
  monkeypatch.setattr(loop, '_train_batches', lambda c, m, seed, start_batch=0: batches(c, m, seed=seed))
  training.train_and_evaluate(config, restarted)
  params = helpers.final_params(restarted)
  assert any(not np.array_equal(params[k], uninterrupted[k]) for k in uninterrupted)


def test_evaluating_a_fake_run_says_why_not(tmp_path):
  workdir = str(tmp_path / 'none')
  with pytest.raises(training.ConfigError, match=r"config.data.name='fake' has no test set"):
    training.evaluate_checkpoint(_fake_config(), workdir)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('arg, frames, temporal', [(None, 32, 'c2d'), ('arch=i3d,frames=32x2', 32, 'i3d_3x1x1'),
                                                   ('frames=8x8,blocks=none', 8, 'c2d')])
def test_benchmark_config_takes_the_kinetics_variants_on_fake_data(arg, frames, temporal):
  kinetics = helpers.load_config('kinetics_nl', arg)
  config = helpers.load_config('benchmark', arg)
  assert config.data.name == 'fake' and config.train.precise_bn_batches == 0
  assert (config.data.num_frames, config.data.crop_size, config.model.temporal) == (frames, 224, temporal)
  assert config.model.to_dict() == kinetics.model.to_dict()  # The variant's network, as kinetics_nl.py builds it.
  checks.check_config(config)  # Ranges, batch over devices, the model's input size: a benchmark that can start.
  with pytest.raises(ValueError, match=r'configs/kinetics_nl.py argument arch=.*must be one of'):
    helpers.load_config('benchmark', 'arch=vgg')
