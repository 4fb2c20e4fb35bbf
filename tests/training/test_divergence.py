"""The divergence guard: a run whose values turn NaN stops at that step, on the device's flag, read only where the
loop reads anyway; no checkpoint holding a NaN is written, resumed, evaluated or loaded; --mode=eval creates no
workdir."""

import os
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.data import train_pipeline
from nonlocal_jax.training import checkpoint, loop, parallel
from tests.training import helpers

# A learning rate far too high: with configs/test.py the gradient norm and the parameters turn NaN within a few
# steps while the loss stays finite (XLA:CPU reduces mean(relu(NaN)) to 0), the case the loss alone missed.
ABSURD = {'train.base_learning_rate': 1e6, 'train.num_steps': 6, 'train.checkpoint_every_steps': 2,
          'train.eval_at_end': False}


def _config(data_dir, **overrides):
  config = helpers.load_config(**{**ABSURD, **overrides})
  config.data.data_dir = data_dir
  return config


def _checkpoint_steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())


@pytest.fixture(scope='module')
def first_nonfinite(data_dir):
  """(step, names) of the first step of the ABSURD run holding a NaN/Inf, found on the host with NumPy."""
  config = _config(data_dir)
  mesh = parallel.make_mesh()
  trainer = training.Trainer(config, mesh)
  state = trainer.init_state()
  batches = train_pipeline.create_train_iterator(config.data, seed=config.seed)
  for step in range(1, config.train.num_steps + 1):
    state, metrics = trainer.train_step(state, parallel.shard_batch(next(batches), mesh))
    parts = {'loss': metrics['loss'], 'gradient norm': metrics['grad_norm'], 'parameters': state.params,
             'BatchNorm statistics': state.batch_stats, 'optimiser state': state.opt_state}
    names = [name for name, tree in parts.items()
             if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(tree))
                        if np.issubdtype(np.asarray(x).dtype, np.inexact))]
    if names:
      return step, names
  raise AssertionError('the absurd learning rate no longer diverges within the run: raise it')


@pytest.mark.parametrize('log_every', [2, 100])  # 100: the flags are read only before checkpoints and at the end.
def test_divergence_stops_at_the_first_nonfinite_step(data_dir, tmp_path, first_nonfinite, log_every):
  bad, names = first_nonfinite
  assert 'loss' not in names, 'the case of the issue: the loss stays finite'
  workdir = str(tmp_path / 'run')
  with pytest.raises(training.NonFiniteLossError) as info:
    training.train_and_evaluate(_config(data_dir, **{'train.log_every_steps': log_every}), workdir)
  message = str(info.value)
  found = re.search(r'the (.*) became NaN or Inf at step (\d+) \(the loss stayed finite\); a rerun resumes from the '
                    r'latest checkpoint, step (\d+) in (\S+), whose values are all finite', message)
  assert found, message
  assert int(found.group(2)) == bad
  assert re.split(r', | and ', found.group(1)) == names
  named, directory = int(found.group(3)), found.group(4)
  assert directory == checkpoint.checkpoint_dir(workdir)
  on_disk = _checkpoint_steps(workdir)
  assert on_disk == [s for s in range(2, bad, 2)] and named == on_disk[-1]  # Every save before step `bad`, no other.
  for step in on_disk:
    variables = flax.traverse_util.flatten_dict(checkpoint.load_variables(workdir, step), sep='/')
    assert all(np.all(np.isfinite(v)) for v in variables.values()), step
  assert 'base_learning_rate' in message and 'warmup_steps' in message


def test_no_host_read_between_logging_steps(data_dir, tmp_path, monkeypatch):
  # Every read of a jax.Array on the host (float(), np.asarray, jax.device_get, bool()) goes through _value.
  events = []
  array_type = type(jnp.zeros(()))
  value = array_type._value  # pylint: disable=protected-access

  def counted(self):
    events.append('read')
    return value.fget(self)
  monkeypatch.setattr(array_type, '_value', property(counted))

  class MarkedTrainer(training.Trainer):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      step = self.train_step

      def marked(*a):
        events.append('step')
        return step(*a)
      self.train_step = marked
  monkeypatch.setattr(loop, 'Trainer', MarkedTrainer)
  # The reference run's program (compiled once per session), logging every 3 steps and saving only at the end.
  config = helpers.load_config(**{**helpers.COMPARABLE, 'train.num_steps': 6, 'train.log_every_steps': 3,
                                  'train.checkpoint_every_steps': 6})
  config.data.data_dir = data_dir
  training.train_and_evaluate(config, str(tmp_path / 'run'))
  per_step, step = {}, 0
  for event in events:
    if event == 'step':
      step += 1
    elif step:
      per_step[step] = per_step.get(step, 0) + 1
  assert step == 6
  assert {s: n for s, n in per_step.items() if s % 3} == {}, 'host reads after steps that neither log nor save'
  assert per_step.get(3, 0) > 0 and per_step.get(6, 0) > 0  # The logging steps do read (the count sees reads).


@pytest.fixture(scope='module')
def poisoned_run(reference_run, tmp_path_factory):
  """A copy of the reference run with a checkpoint at step 12 whose first parameter holds one NaN (as a run
  without the guard wrote them); returns (workdir, the NaN parameter's path)."""
  workdir = helpers.copy_run(reference_run, tmp_path_factory.mktemp('poisoned'))
  config = reference_run['config']
  trainer = training.Trainer(config, parallel.make_mesh())
  manager = checkpoint.create_manager(workdir, keep=10, asynchronous=False)
  state, _ = checkpoint.restore(manager, trainer.init_state())
  flat = flax.traverse_util.flatten_dict(state.params, sep='/')
  name = sorted(flat)[0]
  flat[name] = flat[name].at[(0,) * flat[name].ndim].set(jnp.nan)
  poisoned = state.replace(step=state.step + 2, params=flax.traverse_util.unflatten_dict(flat, sep='/'))
  checkpoint.save(manager, poisoned, batches_consumed=12)
  manager.wait_until_finished()
  manager.close()
  return workdir, name


def test_eval_of_nonfinite_weights_fails_in_one_sentence(reference_run, poisoned_run):
  workdir, _ = poisoned_run
  config = reference_run['config'].copy_and_resolve_references()
  with pytest.raises(training.NonFiniteLossError, match=r'^The checkpoint of step 12 in .* holds NaN or Inf '
                                                        r'parameters: evaluate another with --config.eval_step '
                                                        r'\(one of \[2, 4, 6, 8, 10, 12\]\)'):
    training.evaluate_checkpoint(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'eval', 'test_step12_metrics.json'))


def test_resume_from_nonfinite_checkpoint_fails_before_training(reference_run, poisoned_run):
  workdir, _ = poisoned_run
  config = reference_run['config'].copy_and_resolve_references()
  config.train.num_steps = 14
  with pytest.raises(training.NonFiniteLossError, match=r'^The latest checkpoint, step 12 in .* holds NaN or Inf '
                                                        r'parameters: move its directory away'):
    training.train_and_evaluate(config, workdir)
  assert _checkpoint_steps(workdir)[-1] == 12


def test_init_checkpoint_with_nonfinite_weights_is_refused(data_dir, poisoned_run, tmp_path):
  workdir, _ = poisoned_run
  config = helpers.load_config(**{'train.num_steps': 1, 'train.eval_at_end': False})
  config.data.data_dir = data_dir
  config.train.init_checkpoint = workdir
  with pytest.raises(training.ConfigError, match=r'init_checkpoint=.* holds NaN or Inf parameters'):
    training.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints' / '1')


def test_eval_creates_no_workdir(data_dir, tmp_path):
  config = helpers.load_config()
  config.data.data_dir = data_dir
  missing = tmp_path / 'missing' / 'run'
  with pytest.raises(training.ConfigError, match=r'^The workdir .*missing/run does not exist: pass the --workdir'):
    training.evaluate_checkpoint(config, str(missing))
  assert not os.path.exists(tmp_path / 'missing')
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(training.ConfigError, match=r'^There is no checkpoint in .*empty/checkpoints: train first'):
    training.evaluate_checkpoint(config, str(empty))
  assert not os.path.exists(empty / 'checkpoints')
