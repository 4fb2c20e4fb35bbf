"""Helpers of the sweep tests: the tiny sweep's path, and the configs that main.py builds from printed commands."""

import json
import os
import subprocess
import sys

from nonlocal_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, 'tests', 'sweep', 'tiny_sweep.py')


def configs_from_commands(lines):
  """[(config dict, workdir)] that main.py's own flag parsing builds from printed command lines."""
  # One process per line: config_flags reads overrides from sys.argv and defines them as global flags once (a
  # second parse in the same process fails with "defined twice").
  script = ('import json, shlex, sys; import main\n'
            'argv = shlex.split(sys.stdin.read())\n'
            'assert argv[:2] == ["python", "main.py"], argv\n'
            'sys.argv = argv[1:]\n'
            'main.parse_flags(argv[1:])\n'
            'print(json.dumps([main.FLAGS.config.to_dict(), main.FLAGS.workdir]))\n')
  out = []
  for line in lines:
    result = subprocess.run([sys.executable, '-c', script], input=line, cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    out.append(json.loads(result.stdout))
  return out


def fake_run(config, workdir, metrics):
  """Leaves in ``workdir`` what train_and_evaluate leaves for the sweep: config.json, then the test metrics."""
  os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  with open(sweep.metrics_path(config, workdir), 'w') as f:
    json.dump(metrics, f)
