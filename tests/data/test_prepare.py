"""The prepare command's console: local generation says what it makes and where, and never "Downloading"."""

import os

from nonlocal_jax.data import prepare


def test_synthetic_generation_speaks_for_itself(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)  # A relative --data_dir is printed as the absolute directory it is.
  assert prepare.main(['synthetic_long_range/same_different', '--data_dir=tfds', '--num_train=6',
                       '--num_validation=2', '--num_test=0', '--size=16', '--digit_size=8']) == 0
  lines = capsys.readouterr().out.splitlines()
  directory = os.path.join(str(tmp_path), 'tfds')
  name = 'synthetic_long_range/same_different_s16_d8_ntrain6_nval2_ntest0'
  assert lines[0] == f'Generating {name} locally: 8 clips (6 train, 2 validation) in {directory}.'
  assert lines[1].startswith(f'Generated {name} in ') and lines[1].endswith(' s.') and len(lines) == 2
  assert prepare.main(['synthetic_long_range/same_different', '--data_dir=tfds', '--num_train=6',
                       '--num_validation=2', '--num_test=0', '--size=16', '--digit_size=8']) == 0
  assert capsys.readouterr().out == f'{name} is already prepared in {directory}.\n'
