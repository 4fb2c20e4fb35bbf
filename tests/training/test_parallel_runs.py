"""main.py end to end on 4 fake devices and on 2 processes × 2 devices: the same parameters as 1 device; the console
of the 4-device run (lines for people only, library logs in the workdir's log file)."""

import os
import re
import subprocess

import pytest

from tests.training import helpers


def test_four_devices_match_one_device(reference_run, data_dir, tmp_path):
  # Synchronised BN over the whole batch, no dropout, the same set of clips per step: the split over devices
  # and processes changes only the order of sums.
  four = str(tmp_path / 'four_devices')
  result = helpers.run_main(four, data_dir, helpers.COMPARABLE, devices=4, env={'JAX_LOG_COMPILES': '1'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'on 4 devices (1 processes)' in result.stderr
  helpers.assert_same(helpers.final_params(four), reference_run['params'])
  _check_console(result.stdout + result.stderr, four)
  # Each replicated array is written from one replica: orbax's replica-parallel saving would compile a slice
  # program per shape and device at the first checkpoint (checkpoint.write_each_array_from_one_replica).
  log = open(os.path.join(four, 'logs', 'main.log'), encoding='utf-8').read()
  assert 'Compiling jit(per_device_step)' in log  # The compile log is on.
  assert 'Compiling jit(slice)' not in log


def _check_console(output, workdir):
  lines = output.splitlines()
  # No absl-formatted line (Python or C++: 'I1130 13:01:12.205538 ...'), nothing from orbax or TensorFlow.
  assert not [l for l in lines if re.match(r'[IWEF]\d{4} \d\d:\d\d:\d\d', l)], output
  assert 'orbax' not in output.lower() and 'tensorflow' not in output.lower(), output
  progress = [int(m.group(1)) for m in (re.match(r'step (\d+)/10 \(', l) for l in lines) if m]
  assert progress == [2, 4, 6, 8, 10], output  # One line per logged step, none repeated.
  assert not [l for l in lines if l.startswith('step ') and 'top5' in l], 'a 2-class task shows no top-5 column'
  assert len(lines) <= 13, output  # 3 start-up facts, 5 progress lines, 5 checkpoints.
  log = open(os.path.join(workdir, 'logs', 'main.log'), encoding='utf-8').read()
  assert 'checkpoint_manager.py' in log and 'train/loss=' in log  # orbax's lines and clu's metric lines.
  assert 'step 10/10 (100%)' in log  # The lines for people are in the file too.


@pytest.mark.skipif(not os.environ.get('NONLOCAL_JAX_SLOW_TESTS'),
                    reason='~2 min on 2 cores; set NONLOCAL_JAX_SLOW_TESTS=1 to run the two-process test')
def test_two_processes_match_one_device(reference_run, data_dir, tmp_path):
  two = str(tmp_path / 'two_processes')
  port = helpers.free_port()
  procs = []
  for pid in range(2):
    overrides = dict(helpers.COMPARABLE, **{'multihost.enabled': True,
                                            'multihost.coordinator_address': f'localhost:{port}',
                                            'multihost.num_processes': 2, 'multihost.process_id': pid})
    procs.append(subprocess.Popen(helpers.main_command(two, data_dir, overrides), env=helpers.env_for(2),
                                  cwd=helpers.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=240) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'on 4 devices (2 processes)' in outputs[0][1]
  helpers.assert_same(helpers.final_params(two), reference_run['params'])

