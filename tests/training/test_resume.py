"""SIGKILL in the middle of training (main.py in a subprocess), rerun with the same config (in this process, which
saves a second interpreter's start-up): it resumes and ends where an uninterrupted run ends."""

import logging
import os
import signal
import subprocess
import time

from nonlocal_jax import training

from tests.training import helpers


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(reference_run, data_dir, tmp_path, caplog):
  workdir = str(tmp_path / 'killed')
  command = helpers.main_command(workdir, data_dir, helpers.COMPARABLE)
  env = helpers.env_for(1)
  # Killed as soon as the first checkpoint (step 2 of 10) is complete.
  proc = subprocess.Popen(command, env=env, cwd=helpers.ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = os.path.join(workdir, 'checkpoints', '2')
  deadline = time.time() + 180
  while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  assert not os.path.isdir(os.path.join(workdir, 'checkpoints', '10'))

  caplog.set_level(logging.INFO, logger='nonlocal_jax.console')
  config = helpers.load_config(**helpers.COMPARABLE)  # What the command's flags build.
  config.data.data_dir = data_dir
  training.train_and_evaluate(config, workdir)
  assert any(r.getMessage().startswith('Resuming from step ') for r in caplog.records)
  helpers.assert_same(helpers.final_params(workdir), reference_run['params'], rtol=0, atol=0)
