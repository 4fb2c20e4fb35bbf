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
  # config_flags reads overrides from sys.argv and defines them as global flags once (a second parse in the same
  # process fails with "defined twice"): one process imports main.py and what its configs import, then parses each
  # line in a forked child of its own, which starts in milliseconds instead of a new interpreter's seconds.
  script = ('import json, os, shlex, sys; import main; from nonlocal_jax.layers import family\n'
            'for line in json.loads(sys.stdin.read()):\n'
            '  argv = shlex.split(line)\n'
            '  assert argv[:2] == ["python", "main.py"], argv\n'
            '  sys.stdout.flush()\n'
            '  pid = os.fork()\n'
            '  if pid == 0:\n'
            '    sys.argv = argv[1:]\n'
            '    main.parse_flags(argv[1:])\n'
            '    print(json.dumps([main.FLAGS.config.to_dict(), main.FLAGS.workdir]), flush=True)\n'
            '    os._exit(0)\n'
            '  assert os.waitpid(pid, 0)[1] == 0, line\n')
  result = subprocess.run([sys.executable, '-c', script], input=json.dumps(list(lines)), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 0, result.stderr[-2000:]
  out = [json.loads(line) for line in result.stdout.splitlines()]
  assert len(out) == len(lines), result.stdout[-2000:]
  return out


def fake_run(config, workdir, metrics):
  """Leaves in ``workdir`` what train_and_evaluate leaves for the sweep: config.json, then the test metrics."""
  os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  with open(sweep.metrics_path(config, workdir), 'w') as f:
    json.dump(metrics, f)
