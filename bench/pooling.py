"""The max pools of R50 video networks, forward+backward, in both formulations side by side in one run.

    python bench/pooling.py                 # about a minute on 2 cores
    python bench/pooling.py --batch=8 --repeats=20

``'window'`` is XLA's reduce_window (its gradient a select_and_scatter), ``'slices'`` the running maximum of
strided slices of ``nonlocal_jax.layers.pooling`` (an elementwise gradient). The shapes are the pools of the
official 8x8 networks at 8×224² clips: the stem's 1×3×3 pool (stride 1×2×2, padded), the temporal 2×1×1 pool
after res2, and the non-local blocks' 1×2×2 subsampling at res3 and res4. Each is timed as the gradient of a
sum of squares (median of ``--repeats``, the formulations interleaved so that noise hits both alike) and written
to bench/results/pooling.{json,md} with the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # pylint: disable=g-import-not-at-top
from nonlocal_jax.layers.pooling import max_pool  # pylint: disable=g-import-not-at-top

# name -> (T, H, W, C) of the pooled map at 8×224² input, window, strides, padding.
CASES = {
    'stem pool1 1×3×3 /1×2×2': ((8, 112, 112, 64), (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
    'pool2 2×1×1 after res2': ((8, 56, 56, 256), (2, 1, 1), (2, 1, 1), ((0, 0), (0, 0), (0, 0))),
    'NL subsample 1×2×2, res3': ((4, 28, 28, 512), (1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0))),
    'NL subsample 1×2×2, res4': ((4, 14, 14, 1024), (1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0))),
}


def main() -> None:
  """Times every case in both formulations; prints and writes the table."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=2, help='clips per batch')
  parser.add_argument('--repeats', type=int, default=10, help='timed runs of each program (after one warm-up)')
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  args = parser.parse_args()
  machine = common.machine_description()
  machine['load_average_at_start'] = [round(x, 1) for x in os.getloadavg()] if hasattr(os, 'getloadavg') else None
  rows = []
  for name, (shape, window, strides, padding) in CASES.items():
    x = jax.random.normal(jax.random.key(0), (args.batch,) + shape, jnp.float32)
    programs = {}
    for implementation in ('window', 'slices'):
      loss = lambda x, i=implementation: jnp.sum(max_pool(x, window, strides, padding, i) ** 2)
      step = jax.jit(jax.grad(loss))
      programs[implementation] = lambda step=step: jax.block_until_ready(step(x))
    times = common.time_interleaved(programs, args.repeats)
    rows.append(dict(case=name, shape=f'{args.batch}×' + '×'.join(map(str, shape)),
                     window_ms=1e3 * times['window'], slices_ms=1e3 * times['slices'],
                     speedup=times['window'] / times['slices']))
    print(f"  {name}: window {rows[-1]['window_ms']:.1f} ms, slices {rows[-1]['slices_ms']:.1f} ms", flush=True)
  table = common.markdown_table(
      ['pool', 'input', 'window ms', 'slices ms', 'window / slices'],
      [[r['case'], r['shape'], f"{r['window_ms']:.1f}", f"{r['slices_ms']:.1f}", f"{r['speedup']:.1f}×"]
       for r in rows])
  markdown = (f"Machine: {common.machine_line(machine)}; load average at start {machine['load_average_at_start']}. "
              f'Forward+backward of each max pool, float32, median of {args.repeats}.\n\n' + table)
  common.write_results('pooling', {'machine': machine, 'batch': args.batch, 'repeats': args.repeats,
                                   'cases': rows}, markdown, args.out_dir)


if __name__ == '__main__':
  main()
