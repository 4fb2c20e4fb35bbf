"""The command line writes a checkpoint that the trainer's restore and init_checkpoint read; export reads it back."""

import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from nonlocal_jax import convert
from nonlocal_jax import training
from nonlocal_jax.training import checkpoint as ckpt_lib
from nonlocal_jax.training import parallel
from tests.convert import helpers
from tests.convert.reference import Arch, make_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# configs/test.py: stage sizes (1, 1, 1, 1), width 4, 2 classes, 8x8 stem, one non-local block after res3_0.
ARCH = Arch(stage_sizes=(1, 1, 1, 1), num_classes=2, nonlocal_after=((), (0,), (), ()))


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'nonlocal_jax.convert', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=240)


def _flat(tree):
  return {'/'.join(map(str, k)): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope='module')
def converted_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('cli')
  blobs = make_blobs(ARCH, seed=11)
  src = tmp / 'model.pkl'
  with open(src, 'wb') as f:
    pickle.dump({'blobs': blobs}, f, protocol=2)
  workdir = tmp / 'run'
  result = _cli(f'--src={src}', '--config=configs/test.py', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return blobs, src, workdir


def test_trainer_restore_and_init_checkpoint_read_it(converted_run):
  blobs, _, workdir = converted_run
  config = helpers.load_config('test')
  expected = convert.convert_blobs(blobs, helpers.abstract_variables(helpers.video_model(ARCH), (1, 4, 16, 16, 3)))
  # What main.py --mode=eval does: the trainer's state restored from the workdir.
  trainer = training.Trainer(config, parallel.make_mesh())
  manager = ckpt_lib.create_manager(str(workdir), asynchronous=False)
  state, meta = ckpt_lib.restore(manager, trainer.init_state())
  manager.close()
  assert meta == {'step': 0, 'batches_consumed': 0}
  restored = jax.device_get(trainer.variables(state))
  # What config.train.init_checkpoint reads.
  loaded = ckpt_lib.load_variables(str(workdir))
  for tree in (restored, loaded):
    got, want = _flat(tree), _flat(expected)
    assert sorted(got) == sorted(want)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_export_and_errors(converted_run, tmp_path):
  blobs, src, workdir = converted_run
  out = tmp_path / 'exported.pkl'
  result = _cli(f'--workdir={workdir}', f'--export={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  exported = convert.load_blobs(str(out))
  weights = {k: v for k, v in blobs.items() if not convert.SKIPPED.search(k)}
  assert sorted(exported) == sorted(weights)
  for k, v in weights.items():
    np.testing.assert_array_equal(exported[k], v, err_msg=k)

  again = _cli(f'--src={src}', '--config=configs/test.py', f'--workdir={workdir}')
  assert again.returncode != 0 and 'already holds checkpoints: give an empty --workdir' in again.stderr
  missing = _cli(f'--src={tmp_path / "nope.pkl"}', '--config=configs/test.py', f'--workdir={tmp_path / "x"}')
  assert missing.returncode != 0 and 'does not exist' in missing.stderr
  unknown = _cli('--zoo=nope', f'--workdir={tmp_path / "z"}')
  assert unknown.returncode != 0 and "Error: There is no zoo model 'nope': use one of c2d_baseline_8x8" in unknown.stderr
  # A pickle whose loading would run a shell command: refused in one sentence, and the command never ran.
  marker = tmp_path / 'ran'
  with open(tmp_path / 'evil.pkl', 'wb') as f:
    f.write(b'cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.')
  evil = _cli(f'--src={tmp_path / "evil.pkl"}', '--config=configs/test.py', f'--workdir={tmp_path / "y"}')
  assert evil.returncode != 0 and 'evil.pkl was not loaded: it asks to load os.system' in evil.stderr
  assert not marker.exists() and not (tmp_path / 'y').exists()


def test_safetensors_export_imports_back_to_identical_arrays(converted_run, tmp_path):
  blobs, _, workdir = converted_run
  out = tmp_path / 'exported.safetensors'
  result = _cli(f'--workdir={workdir}', f'--export={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  # The official names and layouts, exactly the source's weights.
  exported = convert.load_blobs(str(out))
  weights = {k: v for k, v in blobs.items() if not convert.SKIPPED.search(k)}
  assert sorted(exported) == sorted(weights)
  for k, v in weights.items():
    assert exported[k].dtype == np.float32
    np.testing.assert_array_equal(exported[k], v, err_msg=k)
  # Imported again: the run's variables, bit for bit.
  run = ckpt_lib.load_variables(str(workdir))
  imported = convert.convert_blobs(exported, run)
  got, want = _flat(imported), _flat(run)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
