"""How long a checkpoint save holds the training loop, with each replicated array written from one replica (ours,
``checkpoint.write_each_array_from_one_replica``) against orbax's replica-parallel default, side by side in one run.

    python -m bench.checkpoint_save                  # on a CPU host: 4 fake devices
    python -m bench.checkpoint_save --devices=8      # on a GPU host the devices are the GPUs (--devices is ignored)

The state is that of R50 C2D + 5 NL (``configs/benchmark.py``; its parameters, BatchNorm statistics and momentum do
not depend on the clip size), replicated over every device as in training. Each way runs in a fresh process (so
that neither reuses the other's compiled programs): ``checkpoint.save`` of the state at steps 1 to --saves, each
timed until the call returns (what the loop waits for) and until the asynchronous write has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = ('one replica', 'replica-parallel')


def _measure(way: str, saves: int) -> dict:
  """In this process: the save times of the benchmark's state, written ``way``."""
  # Imported here: the parent sets the fake device count in the environment before JAX loads in this process.
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from nonlocal_jax import config_files  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.training import checkpoint, parallel  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.training.trainer import Trainer  # pylint: disable=g-import-not-at-top

  config = config_files.load_module(os.path.join(ROOT, 'configs', 'benchmark.py')).get_config('frames=8x8')
  config.data.crop_size, config.data.num_frames = 32, 8
  state = Trainer(config, parallel.make_mesh()).init_state()
  jax.block_until_ready(state)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    manager = checkpoint.create_manager(workdir)
    if way == 'replica-parallel':  # orbax's default handler, as before ours.
      ocp.type_handlers.register_type_handler(
          jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=True), override=True)
    for step in range(1, saves + 1):
      state = state.replace(step=jax.numpy.asarray(step))
      manager.wait_until_finished()
      start = time.perf_counter()
      checkpoint.save(manager, state, batches_consumed=step)
      call_s = time.perf_counter() - start
      manager.wait_until_finished()
      rows.append({'step': step, 'call_s': call_s, 'finished_s': time.perf_counter() - start})
  leaves = jax.tree.leaves(state)
  return {'way': way, 'devices': jax.device_count(), 'device': jax.devices()[0].device_kind, 'leaves': len(leaves),
          'shapes': len({(x.shape, str(x.dtype)) for x in leaves}), 'state_mb': sum(x.nbytes for x in leaves) / 1e6,
          'saves': rows, 'first_call_s': rows[0]['call_s'],
          'later_call_s': statistics.median(r['call_s'] for r in rows[1:]) if len(rows) > 1 else None}


def to_markdown(results, load) -> str:
  """The two ways as a markdown table."""
  r0 = results[0]
  lines = [f"Checkpoint saves of R50 C2D + 5 NL's state ({r0['leaves']} arrays, {r0['shapes']} shapes, "
           f"{r0['state_mb']:.0f} MB) replicated over {r0['devices']} {r0['device']} devices; load average "
           f"{load[0]:.2f} → {load[1]:.2f}:", '',
           '| arrays written | first save holds the loop | later saves (median) | first save finished |',
           '|---|---|---|---|']
  lines += [f"| {r['way']} | {r['first_call_s']:.2f} s | {r['later_call_s']:.2f} s | "
            f"{r['saves'][0]['finished_s']:.2f} s |" for r in results]
  return '\n'.join(lines)


def main(argv=None):
  """Runs each way in its own process and writes bench/results/checkpoint_save.{json,md}."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--devices', type=int, default=4, help='fake CPU devices where the backend is the CPU')
  parser.add_argument('--saves', type=int, default=4, help='saves per way (the first compiles what it needs)')
  parser.add_argument('--out_dir', default=os.path.join(ROOT, 'bench', 'results'))
  parser.add_argument('--way', choices=WAYS, help=argparse.SUPPRESS)  # The child process's side.
  args = parser.parse_args(argv)
  if args.way:
    print(json.dumps(_measure(args.way, args.saves)))
    return None
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
  env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}".strip()
  load = [os.getloadavg()[0]]
  results = []
  for way in WAYS:
    run = subprocess.run([sys.executable, '-m', 'bench.checkpoint_save', f'--way={way}', f'--saves={args.saves}'],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if run.returncode:
      raise SystemExit(f'bench.checkpoint_save --way={way} failed:\n{run.stderr[-3000:]}')
    results.append(json.loads(run.stdout.strip().splitlines()[-1]))
  load.append(os.getloadavg()[0])
  from bench import common  # pylint: disable=g-import-not-at-top  # Loads JAX: only in this parent, after the runs.
  common.write_results('checkpoint_save', {'machine': common.machine_description(), 'load_average': load,
                                           'results': results}, to_markdown(results, load), args.out_dir)
  return results


if __name__ == '__main__':
  main()
