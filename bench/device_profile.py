"""Where a device's time goes in a few train steps: a JAX profiler trace summarised by operation and by kind.

``bench.device`` traces the headline train step with ``jax.profiler.trace`` and calls ``summarize`` on the trace;
the trace itself (``*.xplane.pb``) is kept beside the results, and this module summarises one again:

    python -m bench.device_profile bench/results/nvidia-h200/profile.xplane.pb

It reads the trace with ``jax.profiler.ProfileData`` (no TensorBoard plugin needed). On a GPU the kernels are the
events of the ``/device:GPU:N`` planes; on a CPU, the XLA operations of the host plane. What it reports:

- busy: the union of the device's kernel intervals, against the span from the first kernel to the last; the rest is
  the device idle, waiting for the host (launch overhead, a host sync) or between programs;
- time by kind of operation (convolutions, matrix products, reductions, layout copies, other fusions);
- the operations that take the most time, and the number of kernels per step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
from typing import Dict, Iterable, List, Tuple

import jax

# First match wins, on a kernel's name and its XLA operation together: cuDNN's layout transposes around a
# convolution, convolutions, the fused attention and matrix products are the matrix units' work or its overhead;
# the rest is memory traffic (max-pooling's backward pass is a scatter, BatchNorm's statistics reductions).
KINDS = (('layout transpose', re.compile(r'nchwToNhwc|nhwcToNchw|transpose', re.I)),
         ('convolution', re.compile(r'conv(?!ert)|cudnn-conv|xmma_(fprop|dgrad|wgrad)', re.I)),
         ('fused attention', re.compile(r'sdpa|flash|fmha', re.I)),
         ('matrix product', re.compile(r'gemm|dot|matmul|cublas|nvjet|wgmma', re.I)),
         ('scatter (pooling backward)', re.compile(r'scatter', re.I)),
         ('reduction', re.compile(r'reduce|softmax', re.I)),
         ('copy', re.compile(r'copy|memcpy|memset', re.I)),
         ('other fusion', re.compile(r'fusion|loop|elementwise', re.I)))


def kind_of(name: str) -> str:
  """The kind of one kernel or operation, from its name (and its XLA operation's, joined by a space)."""
  return next((kind for kind, pattern in KINDS if pattern.search(name)), 'other')


def _events(data) -> Tuple[List[Tuple[float, float, str, str]], str]:
  """(start_ns, duration_ns, name, XLA op) of every device kernel (GPU/TPU planes), else of every XLA op on the
  host. A GPU kernel is named by itself: its XLA op is often a whole command buffer (a CUDA graph)."""
  device = [p for p in data.planes if p.name.startswith('/device:') and not p.name.endswith('CUSTOM')]
  events = []
  for plane in device:
    for line in plane.lines:
      for e in line.events:
        events.append((e.start_ns, e.duration_ns, e.name, str(dict(e.stats).get('hlo_op', ''))))
  if events:
    return events, 'device'
  for plane in data.planes:
    for line in plane.lines:
      for e in line.events:
        op = dict(e.stats).get('hlo_op')
        if op:
          events.append((e.start_ns, e.duration_ns, str(op), str(op)))
  return events, 'host'


def _union_ns(intervals: Iterable[Tuple[float, float]]) -> float:
  total, end = 0.0, float('-inf')
  for start, stop in sorted(intervals):
    if stop > end:
      total += stop - max(start, end)
      end = stop
  return total


def summarize(path: str, steps: int, top: int = 15) -> Dict:
  """The trace at ``path`` (``steps`` train steps in it) as busy fraction, time by kind and top operations."""
  events, where = _events(jax.profiler.ProfileData.from_file(path))
  if not events:
    return {'status': 'empty', 'reason': 'the trace holds no device kernels and no XLA operations'}
  span_ns = max(s + d for s, d, _, _ in events) - min(s for s, _, _, _ in events)
  busy_ns = _union_ns((s, s + d) for s, d, _, _ in events)
  by_op, by_kind, calls, kinds = collections.Counter(), collections.Counter(), collections.Counter(), {}
  for _, duration, name, op in events:
    kinds.setdefault(name, kind_of(f'{name} {op}'))
    by_op[name] += duration
    calls[name] += 1
    by_kind[kinds[name]] += duration
  total = sum(by_kind.values())
  return {'status': 'ok', 'where': where, 'steps': steps, 'kernels_per_step': len(events) / steps,
          'span_ms_per_step': span_ns / steps / 1e6, 'busy_ms_per_step': busy_ns / steps / 1e6,
          'busy_fraction': busy_ns / span_ns if span_ns else None,
          'by_kind': {k: {'ms_per_step': v / steps / 1e6, 'share': v / total} for k, v in by_kind.most_common()},
          'top_ops': [{'op': k, 'kind': kinds[k], 'calls_per_step': calls[k] / steps, 'ms_per_step': v / steps / 1e6,
                       'share': v / total} for k, v in by_op.most_common(top)]}


def trace_steps(step, state, batch, steps: int, trace_dir: str) -> Tuple[object, str]:
  """Runs ``state, _ = step(state, batch)`` ``steps`` times under the profiler; returns (state, the .xplane.pb)."""
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True), key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f'jax.profiler.trace wrote no .xplane.pb under {trace_dir}')
  return state, files[-1]


def to_markdown(summary: Dict) -> List[str]:
  """The summary as markdown lines."""
  if summary.get('status') != 'ok':
    return [f"Profile: {summary.get('status')} ({summary.get('reason') or summary.get('error')})."]
  lines = [f"Profile of {summary['steps']} steps ({summary['where']} events): {summary['kernels_per_step']:.0f} "
           f"kernels per step; the device is busy {summary['busy_ms_per_step']:.2f} ms of every "
           f"{summary['span_ms_per_step']:.2f} ms ({100 * summary['busy_fraction']:.0f} %).", '',
           '| kind | ms/step | share of kernel time |', '|---|---|---|']
  lines += [f"| {k} | {v['ms_per_step']:.2f} | {100 * v['share']:.0f} % |" for k, v in summary['by_kind'].items()]
  lines += ['', '| kernel or operation | kind | calls/step | ms/step | share |', '|---|---|---|---|---|']
  lines += [f"| `{o['op'][:70]}` | {o['kind']} | {o.get('calls_per_step', 0):.0f} | {o['ms_per_step']:.3f} | "
            f"{100 * o['share']:.1f} % |" for o in summary['top_ops']]
  return lines


def main(argv=None):
  """Prints the summary of one trace file."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('trace', help='a .xplane.pb written by jax.profiler.trace')
  parser.add_argument('--steps', type=int, default=1, help='train steps in the trace (times are per step)')
  parser.add_argument('--json', action='store_true', help='print JSON instead of markdown')
  args = parser.parse_args(argv)
  summary = summarize(args.trace, args.steps)
  print(json.dumps(summary, indent=1) if args.json else '\n'.join(to_markdown(summary)))


if __name__ == '__main__':
  main()
