"""Shared helpers of the benchmarks: the machine's description, robust timing, and writing results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence

import jax


def machine_description() -> Dict[str, object]:
  """What the figures were measured on: CPU model, cores, accelerator, library versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  device = jax.devices()[0]
  return {
      'cpu': cpu,
      'cpu_cores_available': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
      'backend': jax.default_backend(),
      'device': getattr(device, 'device_kind', str(device)),
      'device_count': jax.device_count(),
      'jax': jax.__version__,
      'python': platform.python_version(),
      'date': time.strftime('%Y-%m-%d'),
  }


def machine_line(machine: Dict[str, object]) -> str:
  """One human-readable line naming the machine."""
  return (f"{machine['backend'].upper()} backend ({machine['device']}), {machine['cpu']}, "
          f"{machine['cpu_cores_available']} cores, "
          f"jax {machine['jax']}, {machine['date']}")


def time_interleaved(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
  """Median wall time (s) of each callable, run round-robin so that machine noise hits all of them alike.

  Each callable must block until its result is ready; each is called once first as a warm-up.
  """
  for fn in fns.values():
    fn()
  samples: Dict[str, List[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      samples[name].append(time.perf_counter() - start)
  return {name: statistics.median(s) for name, s in samples.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """A GitHub markdown table."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def write_results(stem: str, payload: Dict[str, object], markdown: str, out_dir: str, echo: bool = True) -> None:
  """Writes ``{stem}.json`` and ``{stem}.md`` under ``out_dir`` and (if ``echo``) prints the markdown."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f'{stem}.json'), 'w') as f:
    json.dump(payload, f, indent=1)
  with open(os.path.join(out_dir, f'{stem}.md'), 'w') as f:
    f.write(markdown + '\n')
  if echo:
    print(markdown)
