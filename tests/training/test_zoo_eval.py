"""main.py --mode=eval --zoo=NAME: the official weights become the workdir's step-0 checkpoint, which is tested;
what cannot work is refused before any download."""

import json
import os
import shutil
import pickle
import subprocess
import sys

import flax
import numpy as np
import pytest

from nonlocal_jax import convert
from nonlocal_jax import training
from nonlocal_jax import zoo
from nonlocal_jax.training import checkpoint as ckpt_lib
from tests.convert import helpers as convert_helpers
from tests.convert.reference import Arch, make_blobs
from tests.training import helpers

# configs/test.py's network (see tests/convert/test_cli.py).
ARCH = Arch(stage_sizes=(1, 1, 1, 1), num_classes=2, nonlocal_after=((), (0,), (), ()))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
  """A zoo model 'tiny' served from a file:// URL, the zoo's cache in tmp_path, and the expected variables."""
  blobs = make_blobs(ARCH, seed=3)
  path = tmp_path / 'tiny_IN_pretrain_400k.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'blobs': blobs}, f, protocol=2)
  monkeypatch.setitem(zoo.MODELS, 'tiny', zoo.Model('tiny', path.name, 'configs/test.py', 50.0, (),
                                                    url=path.as_uri()))
  monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / 'cache'))
  expected = convert.convert_blobs(blobs, convert_helpers.abstract_variables(convert_helpers.video_model(ARCH),
                                                                             (1, 4, 16, 16, 3)))
  return expected


def test_zoo_weights_are_written_reused_and_tested(tiny, data_dir, tmp_path):
  config = helpers.load_config('test')
  config.data.data_dir = data_dir
  workdir = str(tmp_path / 'run')
  assert convert.pretrained_to_workdir('tiny', config, workdir, evaluate=True)
  loaded = ckpt_lib.load_variables(workdir)
  for part in ('params', 'batch_stats'):
    flat, want = (flax.traverse_util.flatten_dict(t[part], sep='/') for t in (loaded, tiny))
    assert sorted(flat) == sorted(want)
    for k in want:
      np.testing.assert_array_equal(flat[k], want[k], err_msg=k)
  assert json.loads((tmp_path / 'run' / convert.ZOO_MARKER).read_text())['name'] == 'tiny'
  # A rerun (e.g. after an evaluation failed) keeps the checkpoint as it is.
  before = os.stat(os.path.join(ckpt_lib.checkpoint_dir(workdir), '0')).st_mtime_ns
  assert not convert.pretrained_to_workdir('tiny', config, workdir)
  assert os.stat(os.path.join(ckpt_lib.checkpoint_dir(workdir), '0')).st_mtime_ns == before
  result = training.evaluate_checkpoint(config, workdir)
  assert result.metrics['num_videos'] == helpers.load_config('test').data.synthetic.num_test

  # A workdir with checkpoints that --zoo did not write (no marker) is not overwritten.
  other = str(tmp_path / 'other')
  shutil.copytree(workdir, other)
  os.remove(os.path.join(other, convert.ZOO_MARKER))
  with pytest.raises(convert.ConversionError, match=r'already holds checkpoints that are not those of --zoo=tiny: '
                     r'give an empty --workdir\.$'):
    convert.pretrained_to_workdir('tiny', config, other)


def test_a_config_that_cannot_be_tested_is_refused_before_the_download(tiny, tmp_path):
  del tiny
  config = helpers.load_config('test', **{'train.auto_prepare_synthetic': False})
  config.data.data_dir = str(tmp_path / 'no_data')
  with pytest.raises(training.ConfigError, match='does not exist: prepare the dataset there'):
    convert.pretrained_to_workdir('tiny', config, str(tmp_path / 'run'), evaluate=True)
  assert not (tmp_path / 'cache').exists()


def test_main_zoo_flag(tmp_path):
  env = helpers.env_for(1)
  # Any download fails at once (a proxy that refuses): nothing is ever downloaded here.
  env.update(https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9',
             NONLOCAL_JAX_ZOO_DIR=str(tmp_path / 'z'))
  main = [sys.executable, os.path.join(helpers.ROOT, 'main.py'), f'--workdir={tmp_path / "run"}']
  run = lambda *args: subprocess.run(main + list(args), env=env, cwd=helpers.ROOT, capture_output=True, text=True,
                                     timeout=240)
  result = run('--zoo=i3d_nonlocal_32x2')  # --mode defaults to train.
  assert result.returncode != 0 and '--zoo=NAME goes with --mode=eval' in result.stderr
  # The model's own config (Kinetics): its data is checked before anything is fetched.
  result = run('--zoo=i3d_nonlocal_32x2', '--mode=eval')
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode == 1 and 'Traceback' not in result.stderr and last.startswith('Error: '), result.stderr
  assert 'kinetics400' in last and not (tmp_path / 'z').exists()


def test_differences_from_the_published_config_are_named():
  published = zoo.config_of(zoo.get('i3d_nonlocal_32x2'))
  mine = zoo.config_of(zoo.get('i3d_nonlocal_32x2'))
  assert convert._differences(mine, published) == []  # pylint: disable=protected-access
  mine.model.stem_pool_padding, mine.data.test_num_clips, mine.data.eval_global_batch_size = 1, 1, 8
  assert convert._differences(mine, published) == [  # pylint: disable=protected-access
      'data.test_num_clips=1 (published: 10)', 'model.stem_pool_padding=1 (published: 0)']
