"""Damaged checkpoints and failed writes, injected into copies of the reference run: restore falls back to the newest
intact checkpoint bit for bit, moves the damaged one aside with one line; a full disk or an unwritable checkpoints
directory stops the run in one sentence; a rerun still ends where an uninterrupted run ends."""

import errno
import logging
import os
import shutil

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from nonlocal_jax import training
from nonlocal_jax.training import checkpoint, checks, parallel
from tests.training import helpers


def _largest_data_file(step_dir):
  """The largest file of the arrays' OCDBT store (its ``d/`` folders; not the metadata JSON beside them, which
  can be larger for a tiny model and in which a flipped byte may change nothing that is read)."""
  files = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(step_dir, 'state')) for f in names
           if os.path.basename(d) == 'd']
  return max(files, key=os.path.getsize)


_ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'


def _flip_byte(step_dir):
  """Silent damage, as bit rot the storage does not see: one flipped bit in the stored arrays (inside the largest
  zstd frame of the largest data file) at a place where orbax still reads the checkpoint without complaint. A
  flip on a frame's header or in a compressed stream's bookkeeping makes it unreadable instead (another test's
  case), so places are tried from the frame's middle outwards until orbax reads different values."""
  path = _largest_data_file(step_dir)
  original = open(path, 'rb').read()
  starts = [i for i in range(len(original)) if original.startswith(_ZSTD_MAGIC, i)] or [0]
  start, end = max(zip(starts, starts[1:] + [len(original)]), key=lambda span: span[1] - span[0])
  step = (os.path.dirname(os.path.dirname(step_dir)), int(os.path.basename(step_dir)))
  before = _plain_read(*step)
  for sixteenths in (8, 7, 9, 6, 10, 5, 11, 4, 12):
    data = bytearray(original)
    data[start + (end - start) * sixteenths // 16] ^= 0x40
    open(path, 'wb').write(bytes(data))
    try:
      after = _plain_read(*step)
    except Exception:  # pylint: disable=broad-except  # Unreadable: not the silent damage wanted here.
      continue
    if any(not np.array_equal(after[k], before[k]) for k in before):
      return
  raise AssertionError(f'no silent one-bit damage found in {path}')


def _damage(step_dir, how):
  if how == 'missing-file':
    os.remove(_largest_data_file(step_dir))
  elif how == 'truncated':
    path = _largest_data_file(step_dir)
    os.truncate(path, os.path.getsize(path) // 2)
  elif how == 'flipped-byte':
    _flip_byte(step_dir)
  elif how == 'no-meta':  # The JSON item that holds the step, the data position and the digest.
    os.remove(os.path.join(step_dir, 'meta', 'metadata'))
  elif how == 'no-manifest':  # The array metadata of the OCDBT store.
    os.remove(os.path.join(step_dir, 'state', 'manifest.ocdbt'))


def _plain_read(workdir, step):
  """Flat {path: array} of a checkpoint's whole state read by orbax alone (no digest, no fallback)."""
  item = epath.Path(workdir) / 'checkpoints' / str(step) / 'state'
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(item).item_metadata.tree
  restored = checkpointer.restore(item, restore_args=jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
  return {k: v for k, v in flax.traverse_util.flatten_dict(restored, sep='/').items() if v is not None}


def _assert_bit_equal(state, expected):
  flat = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(jax.device_get(state)), sep='/')
  assert sorted(flat) == sorted(expected)
  for k, v in flat.items():
    assert np.asarray(v).dtype == expected[k].dtype, k
    np.testing.assert_array_equal(np.asarray(v), expected[k], err_msg=k, strict=True)


@pytest.fixture(scope='module')
def trainer(reference_run):
  return training.Trainer(reference_run['config'], parallel.make_mesh())


def _skipped_lines(caplog, step):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f'Skipped the checkpoint of step {step}')]


@pytest.mark.parametrize('how', ['missing-file', 'truncated', 'flipped-byte', 'no-meta', 'no-manifest'])
def test_damaged_latest_falls_back_to_the_previous_bit_exactly(reference_run, trainer, tmp_path, caplog, how):
  workdir = helpers.copy_run(reference_run, tmp_path)
  _damage(os.path.join(workdir, 'checkpoints', '10'), how)
  caplog.set_level(logging.INFO, logger='nonlocal_jax.console')
  manager = checkpoint.create_manager(workdir, asynchronous=False)
  state, meta = checkpoint.restore(manager, trainer.init_state())
  assert meta['step'] == 8 and int(state.step) == 8
  _assert_bit_equal(state, _plain_read(reference_run['workdir'], 8))
  moved = os.listdir(os.path.join(workdir, 'checkpoints_damaged'))
  assert len(moved) == 1 and moved[0].startswith('10-'), moved
  if how == 'flipped-byte':  # orbax reads it without complaint: only the digest sees it.
    assert moved[0] == '10-digest-mismatch'
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', '10'))
  assert manager.all_steps() == [2, 4, 6, 8]  # Rotation no longer counts the damaged one.
  lines = _skipped_lines(caplog, 10)
  assert len(lines) == 1 and lines[0].endswith(f'it was moved to {workdir}/checkpoints_damaged/{moved[0]}.'), lines
  manager.close()


def test_resume_past_a_damaged_checkpoint_ends_as_the_uninterrupted_run(reference_run, tmp_path, caplog):
  # A run killed after writing step 8, whose step 8 then lost a bit: it resumes from 6 and ends as the reference.
  workdir = helpers.copy_run(reference_run, tmp_path, steps=(2, 4, 6, 8))
  _flip_byte(os.path.join(workdir, 'checkpoints', '8'))
  config = reference_run['config'].copy_and_resolve_references()
  config.train.keep_checkpoints = 2
  caplog.set_level(logging.INFO, logger='nonlocal_jax.console')
  training.train_and_evaluate(config, workdir)
  assert len(_skipped_lines(caplog, 8)) == 1
  assert any(r.getMessage().startswith('Resuming from step 6 ') for r in caplog.records)
  assert os.listdir(os.path.join(workdir, 'checkpoints_damaged')) == ['8-digest-mismatch']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '8']
  helpers.assert_same(helpers.final_params(workdir), reference_run['params'], rtol=0, atol=0)


def test_no_intact_checkpoint_refuses_now_and_on_every_rerun(reference_run, trainer, tmp_path):
  workdir = helpers.copy_run(reference_run, tmp_path, steps=(2,))
  _flip_byte(os.path.join(workdir, 'checkpoints', '2'))
  sentence = (f'No checkpoint in {workdir}/checkpoints is intact (the damaged ones are in '
              f'{workdir}/checkpoints_damaged): to train from scratch, delete {workdir}/checkpoints_damaged and '
              'rerun, or pass another --workdir.')
  with pytest.raises(checkpoint.CheckpointError) as info:
    checkpoint.restore(checkpoint.create_manager(workdir, asynchronous=False), trainer.init_state())
  assert str(info.value) == sentence
  with pytest.raises(training.ConfigError) as info:  # The rerun: nothing is left to resume, nor to retrain from.
    checks.check_checkpoints(workdir)
  assert str(info.value) == sentence
  shutil.rmtree(os.path.join(workdir, 'checkpoints_damaged'))
  checks.check_checkpoints(workdir)


def test_load_variables_skips_a_damaged_checkpoint_in_place(reference_run, tmp_path, caplog):
  workdir = helpers.copy_run(reference_run, tmp_path, steps=(8, 10))
  _flip_byte(os.path.join(workdir, 'checkpoints', '10'))
  caplog.set_level(logging.INFO, logger='nonlocal_jax.console')
  loaded = flax.traverse_util.flatten_dict(checkpoint.load_variables(workdir), sep='/')
  expected = _plain_read(reference_run['workdir'], 8)
  assert sorted(loaded) == sorted(k for k in expected if k.split('/')[0] in ('params', 'batch_stats'))
  for k, v in loaded.items():
    np.testing.assert_array_equal(v, expected[k], err_msg=k, strict=True)
  assert len(_skipped_lines(caplog, 10)) == 1
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '8']  # Another run's: left in place.
  with pytest.raises(checkpoint.CheckpointError, match=r'^The checkpoint of step 10 in .* is damaged \(its arrays '
                     r'differ from the digest written with them\): choose another step \(\[8\]\)\.$'):
    checkpoint.load_variables(workdir, 10)


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(reference_run, data_dir, tmp_path,
                                                                      monkeypatch):
  workdir = str(tmp_path / 'full')
  write_text = epath.Path.write_text

  def full_disk(self, *args, **kwargs):  # Every file of the step-6 checkpoint fails as on a full disk.
    if f'{os.sep}checkpoints{os.sep}6.' in os.fspath(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.Path, 'write_text', full_disk)
  config = reference_run['config'].copy_and_resolve_references()
  config.train.eval_at_end = False
  with pytest.raises(checkpoint.CheckpointError) as info:
    training.train_and_evaluate(config, workdir)
  assert str(info.value) == (f'Writing a checkpoint to {workdir}/checkpoints failed (No space left on device): free '
                             'space there or pass another --workdir, then rerun; a rerun resumes from step 4, the last '
                             'checkpoint written.')
  assert [s for s in sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) if s.isdigit()] == ['2', '4']
  for step in (2, 4):
    kept, reference = _plain_read(workdir, step), _plain_read(reference_run['workdir'], step)
    assert kept.keys() == reference.keys()
    for k, v in kept.items():
      np.testing.assert_array_equal(v, reference[k], err_msg=k, strict=True)
  monkeypatch.undo()  # Space freed: the rerun resumes from 4 and ends as the uninterrupted run.
  training.train_and_evaluate(config, workdir)
  helpers.assert_same(helpers.final_params(workdir), reference_run['params'], rtol=0, atol=0)


def test_checkpoints_that_cannot_be_written_fail_at_start_up(reference_run, tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'checkpoints').write_text('not a directory')
  config = reference_run['config'].copy_and_resolve_references()
  with pytest.raises(training.ConfigError, match=r'^The checkpoints directory .*/run/checkpoints cannot be written '
                     r'\(Not a directory\): make it a writable directory or pass another --workdir\.$'):
    training.train_and_evaluate(config, str(workdir))
  assert os.listdir(workdir) == ['checkpoints']  # Refused before anything was written.
