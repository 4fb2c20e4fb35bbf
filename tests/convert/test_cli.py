"""The command line writes a checkpoint that the trainer's restore and init_checkpoint read; export reads it back."""

import json
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


# Several command lines in one interpreter (each start costs seconds of imports): absl parses each afresh, and
# each ends as the command line would, with its exit code and what it printed.
_DRIVER = """
import contextlib, io, json, sys
from absl import app, flags
from nonlocal_jax import convert
convert._define_flags()
results = []
for argv in json.loads(sys.argv[1]):
  out, err, code = io.StringIO(), io.StringIO(), 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      flags.FLAGS.unparse_flags()
      app.run(convert.main, argv=['convert'] + argv)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) or e.code is None else 1
      if isinstance(e.code, str):
        print(e.code, file=sys.stderr)
  results.append({'returncode': code or 0, 'stdout': out.getvalue(), 'stderr': err.getvalue()})
print(json.dumps(results))
"""


def _cli_runs(*argvs):
  """The results ({'returncode', 'stdout', 'stderr'}) of ``python -m nonlocal_jax.convert ARGV`` for each argv."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  run = subprocess.run([sys.executable, '-c', _DRIVER, json.dumps([list(map(str, a)) for a in argvs])], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=400)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(run.stdout.strip().splitlines()[-1])


def _flat(tree):
  return {'/'.join(map(str, k)): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope='module')
def converted_run(tmp_path_factory):
  """(blobs, source pickle, workdir, tmp folder, {name: result}) of every command line the tests check, run in one
  interpreter in order: the conversion, both exports, then the errors."""
  tmp = tmp_path_factory.mktemp('cli')
  blobs = make_blobs(ARCH, seed=11)
  src = tmp / 'model.pkl'
  with open(src, 'wb') as f:
    pickle.dump({'blobs': blobs}, f, protocol=2)
  # A pickle whose loading would run a shell command (it must be refused, and the command never run).
  with open(tmp / 'evil.pkl', 'wb') as f:
    f.write(b'cos\nsystem\n(V' + f'touch {tmp / "ran"}'.encode() + b'\ntR.')
  workdir = tmp / 'run'
  convert_args = [f'--src={src}', '--config=configs/test.py', f'--workdir={workdir}']
  commands = {
      'convert': convert_args,
      'export': [f'--workdir={workdir}', f'--export={tmp / "exported.pkl"}'],
      'export_safetensors': [f'--workdir={workdir}', f'--export={tmp / "exported.safetensors"}'],
      'again': convert_args,
      'missing': [f'--src={tmp / "nope.pkl"}', '--config=configs/test.py', f'--workdir={tmp / "x"}'],
      'unknown': ['--zoo=nope', f'--workdir={tmp / "z"}'],
      'evil': [f'--src={tmp / "evil.pkl"}', '--config=configs/test.py', f'--workdir={tmp / "y"}'],
  }
  results = dict(zip(commands, _cli_runs(*commands.values())))
  assert results['convert']['returncode'] == 0, results['convert']['stderr'][-3000:]
  return blobs, src, workdir, tmp, results


def test_trainer_restore_and_init_checkpoint_read_it(converted_run):
  blobs, _, workdir, _, _ = converted_run
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


def test_export_and_errors(converted_run):
  blobs, _, _, tmp, results = converted_run
  assert results['export']['returncode'] == 0, results['export']['stderr'][-3000:]
  exported = convert.load_blobs(str(tmp / 'exported.pkl'))
  weights = {k: v for k, v in blobs.items() if not convert.SKIPPED.search(k)}
  assert sorted(exported) == sorted(weights)
  for k, v in weights.items():
    np.testing.assert_array_equal(exported[k], v, err_msg=k)

  again, missing, unknown, evil = (results[k] for k in ('again', 'missing', 'unknown', 'evil'))
  assert again['returncode'] != 0 and 'already holds checkpoints: give an empty --workdir' in again['stderr']
  assert missing['returncode'] != 0 and 'does not exist' in missing['stderr']
  assert unknown['returncode'] != 0 and ("Error: There is no zoo model 'nope': use one of c2d_baseline_8x8"
                                         in unknown['stderr'])
  assert evil['returncode'] != 0 and 'evil.pkl was not loaded: it asks to load os.system' in evil['stderr']
  assert not (tmp / 'ran').exists() and not (tmp / 'y').exists()


def test_safetensors_export_imports_back_to_identical_arrays(converted_run):
  blobs, _, workdir, tmp, results = converted_run
  out = tmp / 'exported.safetensors'
  assert results['export_safetensors']['returncode'] == 0, results['export_safetensors']['stderr'][-3000:]
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
