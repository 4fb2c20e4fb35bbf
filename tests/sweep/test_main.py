"""The sweep's command line: printed commands build exactly the variants' configs (overrides of any depth), and
collecting a sweep with nothing finished says so and draws no chart."""

import json
import os
import shlex
import subprocess
import sys

from nonlocal_jax import sweep
from tests.sweep import helpers

ROOT, SPEC = helpers.ROOT, helpers.SPEC


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, '-m', 'nonlocal_jax.sweep', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_cli_prints_one_command_per_variant(tmp_path):
  spec = 'configs/ablation_positions.py:synthetic'
  extra = {'data.data_dir': '/tmp/d', 'data.synthetic.num_train': 12}  # A 3-level key is printed as well.
  stdout = _cli(f'--config={spec}', f'--workdir={tmp_path}', '--print_commands',
                *(f'--set={k}={v}' for k, v in extra.items()))
  lines = stdout.strip().splitlines()
  assert [shlex.split(line)[3] for line in lines] == [f'--workdir={tmp_path}/{n}'
                                                     for n in ('c2d', 'space', 'time', 'spacetime')]
  configs = helpers.configs_from_commands(lines)
  module = sweep.load_module(os.path.join(ROOT, 'configs', 'ablation_positions.py'))
  for (config, _), v in zip(configs, sweep.load_variants(module, 'synthetic')):
    expected = sweep.variant_config(module.get_config('synthetic'), v, extra)
    assert json.dumps(config, sort_keys=True) == json.dumps(expected.to_dict(), sort_keys=True), v.name
  assert configs[2][0]['model']['nonlocal_block']['positions'] == 'time'
  assert configs[2][0]['data']['synthetic']['num_train'] == 12


def test_cli_collect_only_with_nothing_finished_says_so_and_draws_no_chart(tmp_path):
  workdir = tmp_path / 'empty'
  stdout = _cli(f'--config={SPEC}', f'--workdir={workdir}', '--collect_only', '--seeds=0,3')
  # N = 2 variants x 2 seeds, each named by its directory.
  assert '0 of 4 runs finished; missing: c2d, c2d_seed3, nl_dot, nl_dot_seed3.' in stdout.splitlines()
  assert 'no chart' in stdout and not (workdir / 'results.png').exists()
  assert (workdir / 'results.md').is_file() and len((workdir / 'results.csv').read_text().splitlines()) == 5
