"""What ``config.compilation_cache_dir`` saves a rerun: ``main.py`` runs of the same shapes without a cache (as
before the field), with an empty cache and with the cache the previous run filled, side by side in one run.

    python -m bench.compile_cache                 # both networks, 4 rounds (about 14 minutes on 2 cores)
    python -m bench.compile_cache --rounds=1 --networks=synthetic

Each run is a fresh ``main.py`` process in a fresh workdir, as a resume after preemption or a repeated sweep point
is, after one uncounted run. The rounds interleave the three ways (none, cold, warm; none first in even rounds,
last in odd ones), so the machine's noise hits them alike. Two figures per run: the seconds from the process's
start to the first progress line (imports, start-up checks, building the state, compiling and running the first
step) and the whole run's seconds. A program is cached when it took JAX at least a second to compile (its
default), so the count of cached programs can differ from run to run. The networks are the main job's
(``configs/synthetic_nl.py``, 20 steps, then its test of 2,000 clips) and R50 C2D + 5 NL on fake clips
(``configs/benchmark.py``, 4×112², 2 clips, 2 steps), sized for a CPU; on a GPU the compile times it would save
are those of ``bench/results/nvidia-h200/device.md`` (11-38 s per R50 step).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = ('none', 'cold', 'warm')
NETWORKS = {
    'synthetic': ('the main job (NL C2D on synthetic clips, 20 steps + test)',
                  ['--config=configs/synthetic_nl.py', '--config.train.num_steps=20',
                   '--config.train.log_every_steps=10']),
    'r50_nl': ('R50 C2D + 5 NL, fake 4×112² clips, 2 steps',
               ['--config=configs/benchmark.py:frames=8x8', '--config.data.num_frames=4', '--config.data.crop_size=112',
                '--config.data.global_batch_size=2', '--config.train.num_steps=2',
                '--config.train.log_every_steps=1']),
}


def _run(args, workdir: str, cache: str | None) -> dict:
  """One ``main.py`` run; the seconds to its first progress line and to its end."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}  # 'none' means no cache at all.
  command = [sys.executable, 'main.py', *args, f'--workdir={workdir}']
  if cache:
    command.append(f'--config.compilation_cache_dir={cache}')
  start = time.perf_counter()
  first = None
  with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as proc:
    lines = []
    for line in proc.stdout:
      lines.append(line)
      if first is None and line.startswith('step '):
        first = time.perf_counter() - start
  if proc.returncode or first is None:
    raise SystemExit(f'main.py {" ".join(args)} failed:\n{"".join(lines[-20:])}')
  return {'first_step_s': first, 'total_s': time.perf_counter() - start}


def measure(network: str, rounds: int) -> dict:
  """``rounds`` rounds of none, cold and warm runs of ``network``; the medians of each way."""
  _, args = NETWORKS[network]
  runs = {way: [] for way in WAYS}
  with tempfile.TemporaryDirectory() as base:
    # Not counted: prepares the synthetic dataset if it is missing and warms the disk's cache of the libraries.
    _run(args, os.path.join(base, 'warm-up'), None)
    for r in range(rounds):
      cache = os.path.join(base, f'cache{r}')
      # 'warm' reads the cache that 'cold' has just filled; 'none' goes first or last in turn, so that neither of
      # the two positions favours it.
      for way in WAYS if r % 2 == 0 else WAYS[1:] + WAYS[:1]:
        workdir = os.path.join(base, f'{way}{r}')
        runs[way].append(_run(args, workdir, None if way == 'none' else cache))
        shutil.rmtree(workdir)
    cached = sum(e.endswith('-cache') for e in os.listdir(cache))  # The last round's.
  return {'network': network, 'runs': runs, 'cached_programs': cached,
          'median': {way: {k: statistics.median(run[k] for run in rs) for k in ('first_step_s', 'total_s')}
                     for way, rs in runs.items()}}


def to_markdown(results, machine_line: str, load) -> str:
  """A table: each network's median seconds per way, and the warm run's against no cache."""
  lines = [f'`main.py` reruns with `config.compilation_cache_dir` ({machine_line}; load average {load[0]:.2f} → '
           f'{load[1]:.2f}); median of {len(results[0]["runs"]["none"])} rounds, each way a fresh process:', '',
           '| network | programs cached | no cache: to first step / whole run | empty cache | filled cache | '
           'filled / none, first step |', '|---|---|---|---|---|---|']
  for res in results:
    m = res['median']
    cells = [f"{m[w]['first_step_s']:.1f} / {m[w]['total_s']:.1f} s" for w in WAYS]
    lines.append(f"| {NETWORKS[res['network']][0]} | {res['cached_programs']} | {' | '.join(cells)} | "
                 f"{m['warm']['first_step_s'] / m['none']['first_step_s']:.2f} |")
  return '\n'.join(lines)


def main(argv=None):
  """Measures each network and writes bench/results/compile_cache.{json,md}."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=4, help='rounds of the three ways per network')
  parser.add_argument('--networks', default=','.join(NETWORKS), help=f'comma-separated, of {", ".join(NETWORKS)}')
  parser.add_argument('--out_dir', default=os.path.join(ROOT, 'bench', 'results'))
  args = parser.parse_args(argv)
  networks = args.networks.split(',')
  unknown = [n for n in networks if n not in NETWORKS]
  if unknown:
    parser.error(f'unknown network {unknown[0]!r}: use some of {", ".join(NETWORKS)}.')
  load = [os.getloadavg()[0]]
  results = [measure(n, args.rounds) for n in networks]
  load.append(os.getloadavg()[0])
  from bench import common  # pylint: disable=g-import-not-at-top  # Loads JAX: only in this parent, after the runs.
  machine = common.machine_description()
  common.write_results('compile_cache', {'machine': machine, 'load_average': load, 'results': results},
                       to_markdown(results, common.machine_line(machine), load), args.out_dir)
  return results


if __name__ == '__main__':
  main()
