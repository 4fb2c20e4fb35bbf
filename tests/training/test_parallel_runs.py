"""main.py end to end on 4 fake devices and on 2 processes × 2 devices: the same parameters as 1 device."""

import os
import subprocess

import pytest

from tests.training import helpers


def test_four_devices_match_one_device(reference_run, data_dir, tmp_path):
  # Synchronised BN over the whole batch, no dropout, the same set of clips per step: the split over devices
  # and processes changes only the order of sums.
  four = str(tmp_path / 'four_devices')
  result = helpers.run_main(four, data_dir, helpers.COMPARABLE, devices=4)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'on 4 devices (1 processes)' in result.stderr
  helpers.assert_same(helpers.final_params(four), reference_run['params'])


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

