"""The training loop never synchronises with the host between logging steps (issue 19), shown on a fake-data run:
every host read of a jax array and every wait on one is recorded with the step it happened after. Between logging
steps the host reads nothing, and the only wait is the loop's bound on how far it runs ahead (the flag of the step
two behind, so the device always has the next step queued). Injected faults prove the count sees what it must: a
``float(loss)`` after every step, and a wait on the step just launched."""

import jax
import jax.numpy as jnp
import pytest

from nonlocal_jax import training
from nonlocal_jax.training import loop
from tests.training import helpers

LOG_EVERY = 3
STEPS = 6


def _recorded_run(tmp_path, monkeypatch, inject=None):
  """Runs the loop on fake data; returns [(step, 'read' | ('wait', step that produced the array or None))]."""
  events, produced_by, current = [], {}, [0]
  array_type = type(jnp.zeros(()))
  value = array_type._value  # pylint: disable=protected-access

  def counted_read(self):  # float(), int(), np.asarray, jax.device_get and bool() all read through _value.
    events.append((current[0], 'read'))
    return value.fget(self)
  monkeypatch.setattr(array_type, '_value', property(counted_read))
  wait = jax.block_until_ready

  def counted_wait(x):
    events.append((current[0], ('wait', produced_by.get(id(x)))))
    return wait(x)
  monkeypatch.setattr(jax, 'block_until_ready', counted_wait)

  class RecordingTrainer(training.Trainer):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      step = self.train_step

      def recorded(*a):
        current[0] += 1
        state, metrics = step(*a)
        produced_by.update({id(leaf): current[0] for leaf in jax.tree.leaves(metrics)})
        if inject == 'read_loss':  # The fault: someone prints or accumulates the loss on the host every step.
          float(metrics['loss'])
        elif inject == 'wait_latest':  # The fault: the host waits for the step it just launched.
          jax.block_until_ready(metrics['nonfinite'])
        return state, metrics
      self.train_step = recorded
  monkeypatch.setattr(loop, 'Trainer', RecordingTrainer)
  config = helpers.load_config(**{'data.name': 'fake', 'train.num_steps': STEPS, 'train.schedule': 'constant',
                                  'train.log_every_steps': LOG_EVERY, 'train.checkpoint_every_steps': STEPS})
  training.train_and_evaluate(config, str(tmp_path / 'run'))
  assert current[0] == STEPS
  return events


def _syncs_between_logging_steps(events):
  """What the host did after a step that neither logs nor saves that stalls the device: reads, and waits on a step
  fewer than two behind (or on an array no step produced)."""
  bad = []
  for step, event in events:
    if step == 0 or step % LOG_EVERY == 0:
      continue
    if event == 'read' or event[1] is None or event[1] > step - 2:
      bad.append((step, event))
  return bad


@pytest.mark.parametrize('inject', [None, 'read_loss', 'wait_latest'])
def test_no_host_sync_between_logging_steps(tmp_path, monkeypatch, inject):
  events = _recorded_run(tmp_path, monkeypatch, inject)
  bad = _syncs_between_logging_steps(events)
  if inject is None:
    assert bad == [], 'the host synchronised with the device between logging steps'
    reads = {step for step, event in events if event == 'read'}
    assert {LOG_EVERY, STEPS} <= reads  # The logging steps do read: the count sees the loop's reads.
    waits = [(step, event[1]) for step, event in events if event != 'read' and 0 < step < STEPS]
    assert waits and all(produced == step - 2 for step, produced in waits)  # The bound: the step two behind.
  else:  # The injected per-step sync is found after every non-logging step.
    assert sorted({step for step, _ in bad}) == [s for s in range(1, STEPS + 1) if s % LOG_EVERY]
