"""The start-up checks: each problem of the config, the data or the workdir named in one sentence."""

import jax
import jax.numpy as jnp
import pytest
from etils import epath
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from nonlocal_jax import training
from nonlocal_jax.training import checks
from tests.training import helpers


@pytest.mark.parametrize('change, message', [
    ({'train.accumulation_steps': 3}, r'global_batch_size=16 must be a multiple of the 1 devices × '
                                      r'train.accumulation_steps=3'),
    ({'data.eval_global_batch_size': 0}, r'eval_global_batch_size=0 is out of range: use a whole number ≥ 1'),
    ({'model.num_classes': 5}, r'num_classes=5 but dataset .* has 2 classes'),
    ({'train.schedule': 'linear'}, r"schedule='linear' is out of range: use one of 'step', 'cosine', 'constant'"),
    ({'train.freeze': '(['}, r"train.freeze='\(\[' is out of range: use a valid regular expression"),
    ({'data.name': 'kinetics400'}, r"Dataset 'kinetics/400' is not prepared .*python -m nonlocal_jax.data.prepare "
                                   r'kinetics400'),
    ({'train.init_checkpoint': '/nonexistent/run'}, r'init_checkpoint=/nonexistent/run is not a directory'),
    ({'model.nonlocal_block.pairwise': 'cosine'}, r'nonlocal_block.pairwise must be one of'),
    ({'compilation_cache_dir': '/dev/null/cache'}, r'compilation_cache_dir=/dev/null/cache cannot be written'),
    ({'model.nonlocal_pairwise': 'dot_product'}, r'config.model.nonlocal_pairwise is now '
                                                 r'config.model.nonlocal_block.pairwise'),
])
def test_config_errors_name_the_problem(data_dir, tmp_path, change, message):
  config = helpers.load_config(**change)
  config.data.data_dir = data_dir
  with pytest.raises(training.ConfigError, match=message):
    training.startup(config, str(tmp_path))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(training.ConfigError, match=r'workdir .*file/run is not writable'):
    training.check_workdir(str(blocker / 'run'))


@pytest.mark.parametrize('where', ['local', 'remote'])
def test_the_compilation_cache_goes_where_the_config_says(compilation_cache, tmp_path, request, where):
  jax.jit(lambda x: x + 1)(jnp.ones(3)).block_until_ready()  # The session's cache is open in this process.
  # remote: a gs:// stand-in (tests/remote.py), reached the way JAX reaches gs://, through etils.epath.
  directory = f"{request.getfixturevalue('remote_dir')}/cache" if where == 'remote' else str(tmp_path / 'cache')
  config = helpers.load_config(compilation_cache_dir=directory)
  try:
    checks.use_compilation_cache(config)
    jax.jit(lambda x: x * 3 - 7)(jnp.ones(5)).block_until_ready()
    assert [p.name for p in epath.Path(directory).iterdir() if p.name.endswith('-cache')]
  finally:
    jax_cache.set_cache_dir(compilation_cache)
    jax_cache.reset_cache()
