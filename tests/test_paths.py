"""nonlocal_jax.paths: remote paths (gs://) pass through unchanged, local ones behave as the os functions."""

import os

import pytest

from nonlocal_jax import paths


@pytest.mark.parametrize('path', ['gs://bucket/run', 'gs://bucket/a/b.json', 's3://bucket/run'])
def test_remote_paths_are_kept_as_given(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.is_remote(path)
  # os.path.abspath would give <cwd>/gs:/bucket/run, a local folder.
  assert os.fspath(paths.absolute(path)) == path
  assert os.fspath(paths.expand(path)) == path
  assert os.fspath(paths.as_path(path) / 'checkpoints') == f'{path}/checkpoints'


def test_local_paths_follow_the_os_functions(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert not paths.is_remote('run') and not paths.is_remote(tmp_path)
  assert os.fspath(paths.absolute('run')) == os.path.abspath('run') == os.path.join(os.getcwd(), 'run')
  assert os.fspath(paths.expand('~/data')) == os.path.expanduser('~/data') != '~/data'
  assert paths.errors('run') == (OSError,)


def test_an_unknown_scheme_is_refused_in_one_sentence():
  with pytest.raises(ValueError, match=r'^nosuchfs://b/x is on a file system \(nosuchfs://\) that this installation '
                                       r'cannot reach: use a local path or a gs:// path\.$'):
    paths.as_path('nosuchfs://b/x')


def test_remote_errors_and_modification_time(remote_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # A refused write on GCS raises a TensorFlow error that is no OSError: callers must catch both.
  assert not issubclass(tf.errors.PermissionDeniedError, OSError)
  assert any(issubclass(tf.errors.PermissionDeniedError, e) for e in paths.errors(remote_dir))
  file = paths.as_path(remote_dir) / 'f.txt'
  file.write_text('x')
  # Asked of the file's own file system (os.path.getmtime would not find it); ram:// records no times, GCS does.
  assert paths.mtime(file) == tf.io.gfile.stat(os.fspath(file)).mtime_nsec // 10**9


def test_local_modification_time_is_the_os_one(tmp_path):
  file = tmp_path / 'f.txt'
  file.write_text('x')
  os.utime(file, (1e9, 1e9 + 0.25))
  assert paths.mtime(file) == os.path.getmtime(file) == 1e9 + 0.25


def test_write_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
  file = tmp_path / 'f.json'
  file.write_bytes(b'old')
  paths.write_atomic(str(file), b'new contents')
  assert file.read_bytes() == b'new contents' and os.listdir(tmp_path) == ['f.json']


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
  file = tmp_path / 'f.json'
  file.write_bytes(b'old')

  def refused(self, target):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(type(paths.as_path(str(file))), 'replace', refused)
  with pytest.raises(OSError, match='No space left'):
    paths.write_atomic(file, b'new')
  assert file.read_bytes() == b'old' and os.listdir(tmp_path) == ['f.json']


def test_write_atomic_on_a_remote_file_system(remote_dir):
  paths.write_atomic(f'{remote_dir}/f.bin', b'\x00\x01')
  assert paths.as_path(f'{remote_dir}/f.bin').read_bytes() == b'\x00\x01'
  assert [p.name for p in paths.as_path(remote_dir).iterdir()] == ['f.bin']
