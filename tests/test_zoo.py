"""The zoo: download (file:// URLs only: nothing is downloaded from the network), verification, the cached
conversion, the sentences when the network or the file fails, zoo:NAME references and the README's table."""

import hashlib
import io
import os
import pathlib
import pickle
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

from nonlocal_jax import blobs as blobs_lib
from nonlocal_jax import zoo
from nonlocal_jax.training import checkpoint as ckpt_lib
from nonlocal_jax.training import checks
from nonlocal_jax.training.errors import ConfigError
from tests.convert import helpers
from tests.convert.reference import Arch, make_blobs

ROOT = pathlib.Path(__file__).resolve().parents[1]
# configs/test.py: stage sizes (1, 1, 1, 1), width 4, 2 classes, 8x8 stem, one non-local block after res3_0.
ARCH = Arch(stage_sizes=(1, 1, 1, 1), num_classes=2, nonlocal_after=((), (0,), (), ()))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Any URL but file:// fails as an unreachable network would: a test cannot download."""
  real = urllib.request.urlopen

  def urlopen(url, *args, **kwargs):
    if not str(url).startswith('file://'):
      raise urllib.error.URLError(OSError(101, 'Network is unreachable'))
    return real(url, *args, **kwargs)
  monkeypatch.setattr(urllib.request, 'urlopen', urlopen)


@pytest.fixture(scope='module')
def official(tmp_path_factory):
  """An official-style Caffe2 pickle of configs/test.py's network, and the variables it converts to."""
  blobs = make_blobs(ARCH, seed=5)
  path = tmp_path_factory.mktemp('server') / 'tiny_IN_pretrain_400k.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'blobs': blobs}, f, protocol=2)
  # Independently of the zoo: the strict conversion onto the reference model's variables.
  expected = blobs_lib.convert_blobs(blobs, helpers.abstract_variables(helpers.video_model(ARCH), (1, 4, 16, 16, 3)))
  return path, expected


def _register(monkeypatch, path, **kwargs):
  model = zoo.Model('tiny', path.name, 'configs/test.py', 50.0, overrides=(), url=path.as_uri(), **kwargs)
  monkeypatch.setitem(zoo.MODELS, 'tiny', model)
  return model


def _count(monkeypatch):
  """Counts the reads of weight files and the conversions that the zoo does."""
  calls = {'load_blobs': 0, 'convert_blobs': 0}
  for name in calls:
    real = getattr(blobs_lib, name)

    def counted(*args, _real=real, _name=name, **kwargs):
      calls[_name] += 1
      return _real(*args, **kwargs)
    monkeypatch.setattr(blobs_lib, name, counted)
  return calls


def _assert_equal(got, want):
  flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  got, want = flat(got), flat(want)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _files(directory):
  """The files under ``directory`` (none if it does not exist), relative to it."""
  return sorted(os.path.relpath(os.path.join(d, f), directory) for d, _, fs in os.walk(directory) for f in fs)


def test_download_convert_then_the_cache_is_used(official, tmp_path, monkeypatch):
  path, expected = official
  _register(monkeypatch, path)
  calls = _count(monkeypatch)
  cache = tmp_path / 'cache'
  first = zoo.load_pretrained('tiny', str(cache))
  _assert_equal(first, {'params': expected['params'], 'batch_stats': expected['batch_stats']})
  assert calls == {'load_blobs': 1, 'convert_blobs': 1}
  assert (cache / path.name).read_bytes() == path.read_bytes()
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  assert (cache / f'{path.name}.sha256').read_text().strip() == digest
  # The second load reads the cached conversion: no download (the server's copy is gone), no unpickling, no
  # conversion.
  moved = path.with_suffix('.moved')
  path.rename(moved)
  try:
    second = zoo.load_pretrained('tiny', str(cache))
  finally:
    moved.rename(path)
  assert calls == {'load_blobs': 1, 'convert_blobs': 1}
  _assert_equal(second, first)
  # A damaged conversion is redone (once), not trusted.
  (converted,) = (cache / 'converted').iterdir()
  converted.write_bytes(converted.read_bytes()[:100])
  _assert_equal(zoo.load_pretrained('tiny', str(cache)), first)
  assert calls == {'load_blobs': 2, 'convert_blobs': 2}


def test_a_file_damaged_in_the_cache_is_refused(official, tmp_path, monkeypatch):
  path, _ = official
  _register(monkeypatch, path)
  cache = tmp_path / 'cache'
  zoo.load_pretrained('tiny', str(cache))
  before = _files(cache)
  data = bytearray((cache / path.name).read_bytes())
  data[-20] ^= 1  # A bit flip inside an array: the pickle still reads.
  (cache / path.name).write_bytes(bytes(data))
  calls = _count(monkeypatch)
  with pytest.raises(zoo.ZooError, match=rf'^{cache / path.name} is damaged \(its sha256 is [0-9a-f]{{64}}, the file '
                     rf'of {path.as_uri()} has [0-9a-f]{{64}}\): delete it so that it is downloaded again, or put a '
                     r'good copy there by hand\.$'):
    zoo.load_pretrained('tiny', str(cache))
  assert calls == {'load_blobs': 0, 'convert_blobs': 0} and _files(cache) == before


def test_a_published_checksum_that_differs_leaves_nothing_in_the_cache(official, tmp_path, monkeypatch):
  path, expected = official
  wrong = hashlib.sha256(b'another file').hexdigest()
  _register(monkeypatch, path, sha256=wrong)
  cache = tmp_path / 'cache'
  with pytest.raises(zoo.ZooError, match=rf'^The file downloaded from {path.as_uri()} is damaged \(its sha256 is '
                     rf'[0-9a-f]{{64}}, not the published {wrong}\): rerun, or download {path.as_uri()} by hand and '
                     rf'put it at {cache / path.name}\.$'):
    zoo.load_pretrained('tiny', str(cache))
  assert _files(cache) == []
  # With the right checksum, the same file loads.
  _register(monkeypatch, path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
  _assert_equal(zoo.load_pretrained('tiny', str(cache)), {k: expected.get(k, {}) for k in ('params', 'batch_stats')})


def test_no_network_says_where_to_put_the_file_and_a_copy_by_hand_loads(official, tmp_path, monkeypatch):
  path, expected = official
  url = 'https://example.invalid/tiny_IN_pretrain_400k.pkl'
  monkeypatch.setitem(zoo.MODELS, 'tiny', zoo.Model('tiny', path.name, 'configs/test.py', 50.0, (), url=url))
  cache = tmp_path / 'cache'
  with pytest.raises(zoo.ZooError, match=rf'^tiny is not in {cache} and cannot be downloaded \(\[Errno 101\] Network '
                     rf'is unreachable\): download {url} by hand and put it at {cache / path.name}\.$'):
    zoo.load_pretrained('tiny', str(cache))
  assert _files(cache) == []
  cache.mkdir(exist_ok=True)
  (cache / path.name).write_bytes(path.read_bytes())
  _assert_equal(zoo.load_pretrained('tiny', str(cache)), {k: expected.get(k, {}) for k in ('params', 'batch_stats')})


def test_a_download_cut_short_is_not_kept(official, tmp_path, monkeypatch):
  path, _ = official

  class Truncated(io.BytesIO):
    headers = {'Content-Length': str(path.stat().st_size)}
  monkeypatch.setattr(urllib.request, 'urlopen', lambda *a, **k: Truncated(path.read_bytes()[:1000]))
  _register(monkeypatch, path)
  cache = tmp_path / 'cache'
  with pytest.raises(zoo.ZooError, match=rf'^The download of {path.as_uri()} stopped after 1000 of '
                     rf'{path.stat().st_size} bytes: rerun, or download .* by hand and put it at .*\.$'):
    zoo.load_pretrained('tiny', str(cache))
  assert _files(cache) == []


def test_wrong_or_unsafe_files_are_refused_and_nothing_is_converted(tmp_path, monkeypatch):
  server = tmp_path / 'server'
  server.mkdir()
  marker = tmp_path / 'ran'
  (server / 'evil.pkl').write_bytes(b'cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.')
  np.savez(server / 'other.npz', conv1_w=np.ones((4, 3, 1, 3, 3), np.float32))
  for name, what in (('evil.pkl', r'it asks to load os\.system'), ('other.npz', 'The checkpoint does not fit')):
    _register(monkeypatch, server / name)
    cache = tmp_path / name
    with pytest.raises(zoo.ZooError, match=rf'^{cache / name} is not the weights of tiny \(.*{what}.*\): delete it '
                       r'so that it is downloaded again, or put the official file there by hand\.$'):
      zoo.load_pretrained('tiny', str(cache))
    assert not (cache / 'converted').exists()
  assert not marker.exists()


def test_references_and_init_checkpoint(official, tmp_path, monkeypatch):
  path, expected = official
  _register(monkeypatch, path)
  monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / 'cache'))
  assert zoo.parse_reference('/runs/baseline') is None and zoo.parse_reference(None) is None
  assert zoo.parse_reference('zoo:tiny') == 'tiny'
  with pytest.raises(zoo.ZooError, match=r"^There is no zoo model 'nope': use one of c2d_baseline_8x8, "):
    zoo.parse_reference('zoo:nope')
  # What config.train.init_checkpoint reads (the loop merges it by name and shape).
  _assert_equal(ckpt_lib.load_variables('zoo:tiny'), {k: expected.get(k, {}) for k in ('params', 'batch_stats')})
  assert (tmp_path / 'cache' / path.name).exists()
  config = helpers.load_config('test')
  config.train.init_checkpoint = 'zoo:tiny'
  checks.check_config(config)
  config.train.init_checkpoint = 'zoo:nope'
  with pytest.raises(ConfigError, match=r'^config.train.init_checkpoint=zoo:nope names no official model: use '
                     r'zoo:NAME with NAME one of c2d_baseline_8x8, .*i3d_nonlocal_128x1, tiny\.$'):
    checks.check_config(config)
  # A failure to fetch is a ConfigError too (main.py prints its sentence).
  monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / 'empty'))
  monkeypatch.setitem(zoo.MODELS, 'tiny', zoo.Model('tiny', path.name, 'configs/test.py', 50.0, (),
                                                    url='https://example.invalid/x.pkl'))
  with pytest.raises(ConfigError, match=r'^tiny is not in .* and cannot be downloaded .*: download '):
    ckpt_lib.load_variables('zoo:tiny')


def test_the_readme_shows_the_zoo_table():
  readme = (ROOT / 'README.md').read_text()
  assert zoo.markdown_table() in readme, 'README.md must show `python -m nonlocal_jax.zoo` (the zoo table) verbatim'
