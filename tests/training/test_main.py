"""main.py's start-up errors end with one sentence, not a traceback."""

import subprocess

from tests.training import helpers


def _run(args, tmp_path, timeout=120):
  return subprocess.run(helpers.main_command(str(tmp_path / 'run'), str(tmp_path / 'data'))[:3] + args,
                        env=helpers.env_for(1), cwd=helpers.ROOT, capture_output=True, text=True, timeout=timeout)


def test_unknown_field_and_wrong_type_are_flag_errors(tmp_path):
  result = _run(['--workdir=' + str(tmp_path), '--config.train.num_step=3'], tmp_path)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'num_step' in result.stderr
  result = _run(['--workdir=' + str(tmp_path), '--config.train.num_steps=many'], tmp_path)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'num_steps' in result.stderr


def test_start_up_error_is_one_sentence(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  result = _run([f'--workdir={blocker}/run'], tmp_path)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('Error: The workdir ')
