"""Speed of the video networks: forward and train-step time per clip, compile time, multiply-add rate.

    python bench/models.py                      # R50 C2D, C2D + 5 NL, I3D, I3D + 5 NL at 8×224×224, batch 2
    python bench/models.py --repeats=2 --batch=2 --models=c2d,c2d_nl --conv=folded,native
    python bench/models.py --models=c2d_nl,i3d_nl --pool=window,slices   # the max pools' two formulations

For each network: the compile time of the jitted forward pass (inference BN) and of the jitted train step
(forward, backward, SGD update, BatchNorm statistics, dropout); their best wall time per clip over
``--repeats`` runs after one warm-up run (the best, not the median, because a shared machine only ever makes
runs slower; the medians are in the JSON); and the achieved multiply-add rate (the exact count of
``nonlocal_jax.models.summary``, 3× for the train step: forward plus twice for the backward pass) against this
machine's rate on a large float32 matrix multiplication, measured just before each network. ``--conv`` lists
the convolution implementations to time ('folded' 2D convolutions over frames, 'native' 3D ones), ``--pool`` the
max pools' ('window': XLA's reduce_window, 'slices': strided slices; ``nonlocal_jax.layers.pooling``). Prints a markdown
table and writes bench/results/<--name, default models>.{json,md}, with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # pylint: disable=g-import-not-at-top
from nonlocal_jax.layers import pooling  # pylint: disable=g-import-not-at-top
from nonlocal_jax.models import ResNetVideo  # pylint: disable=g-import-not-at-top
from nonlocal_jax.models.summary import analyse  # pylint: disable=g-import-not-at-top

NETWORKS = {
    'c2d': ('R50 C2D', dict(depth=50, temporal='c2d')),
    'c2d_nl': ('R50 C2D + 5 NL', dict(depth=50, temporal='c2d', nonlocal_locations='5')),
    'i3d': ('R50 I3D', dict(depth=50, temporal='i3d_3x1x1')),
    'i3d_nl': ('R50 I3D + 5 NL', dict(depth=50, temporal='i3d_3x1x1', nonlocal_locations='5')),
}


def machine() -> dict:
  """The shared machine description, plus the load average (a load above the core count means the timings are
  pessimistic on this shared machine)."""
  description = common.machine_description()
  description['load_average_at_start'] = ([round(x, 1) for x in os.getloadavg()]
                                          if hasattr(os, 'getloadavg') else None)
  return description


def timed(fn, *args, repeats: int) -> tuple:
  """(best, median) wall time of fn(*args) over ``repeats`` runs after one warm-up run."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times), statistics.median(times)


def matmul_rate(n: int, repeats: int, dtype=jnp.float32) -> float:
  """Multiply-adds per second of an n×n by n×n matrix product in ``dtype`` on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  product = jax.jit(jnp.matmul)
  return n**3 / timed(product, a, b, repeats=repeats)[0]


def synthetic_variables(model, clips) -> dict:
  """Variables of the right shapes filled by NumPy (He-scaled normals, unit BN), skipping the slow jitted init."""
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), clips)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith(("['scale']", "['var']")):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name.endswith(("['bias']", "['mean']")):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * np.sqrt(2.0 / fan_in))

  return jax.tree_util.tree_map_with_path(fill, shapes)


def compile_and_time(fn, args, repeats: int):
  """(compile seconds, (best, median) run seconds) of jax.jit(fn) on args."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  return compile_s, timed(compiled, *args, repeats=repeats)


def bench_network(key: str, conv: str, pool: str, args) -> dict:
  """Times one network with one convolution and one pool implementation; returns a row of the results table."""
  label, kwargs = NETWORKS[key]
  label = f'{label} ({conv} conv, {pool} pools)'
  model = ResNetVideo(stem='8x8', conv_implementation=conv, pool_implementation=pool, **kwargs)
  rate = matmul_rate(args.matmul_size, args.repeats)
  shape = (args.batch, args.frames, args.size, args.size, 3)
  clips = jnp.asarray(np.random.default_rng(1).standard_normal(shape, np.float32))
  labels = jnp.arange(args.batch) % model.num_classes
  variables = synthetic_variables(model, jax.ShapeDtypeStruct(shape, jnp.float32))
  macs = analyse(model, (1,) + shape[1:]).macs

  def forward(v, x):
    return model.apply(v, x, train=False)

  def train_step(v, x, y, rng):
    def loss_fn(params):
      logits, updates = model.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'],
                                    rngs={'dropout': rng})
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
      return loss, updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(v['params'])
    params = jax.tree.map(lambda p, g: p - 0.01 * g, v['params'], grads)
    return {'params': params, **updates}, loss

  forward_compile, (forward_s, forward_median) = compile_and_time(forward, (variables, clips), args.repeats)
  print(f'  {label}: forward compiled in {forward_compile:.1f} s, {forward_s / args.batch:.3f} s/clip', flush=True)
  train_compile, (train_s, train_median) = compile_and_time(
      train_step, (variables, clips, labels, jax.random.key(2)), args.repeats)
  print(f'  {label}: train step compiled in {train_compile:.1f} s, {train_s / args.batch:.3f} s/clip', flush=True)
  forward_rate = macs * args.batch / forward_s
  train_rate = 3 * macs * args.batch / train_s
  return {
      'network': label, 'gmacs_per_clip': macs / 1e9,
      'forward_s_per_clip': forward_s / args.batch, 'train_step_s_per_clip': train_s / args.batch,
      'forward_median_s_per_clip': forward_median / args.batch,
      'train_step_median_s_per_clip': train_median / args.batch, 'matmul_gmacs_per_s': rate / 1e9,
      'forward_compile_s': forward_compile, 'train_step_compile_s': train_compile,
      'forward_gmacs_per_s': forward_rate / 1e9, 'train_gmacs_per_s': train_rate / 1e9,
      'forward_fraction_of_matmul': forward_rate / rate, 'train_fraction_of_matmul': train_rate / rate,
  }


def markdown(results: dict) -> str:
  """The results as a markdown table with the machine line above it."""
  m, s = results['machine'], results['settings']
  lines = [
      f"Machine: {common.machine_line(m)}, Python {m['python']}; "
      f"load average (1, 5, 15 min) at start {m['load_average_at_start']}.",
      f"Input {s['batch']}×{s['frames']}×{s['size']}×{s['size']}×3 (official 8x8 stem), float32, "
      f"best of {s['repeats']} runs; float32 {s['matmul_size']}² matmul measured "
      f"before each network (GMAC/s).",
      '',
      '| network | GMAC/clip | forward s/clip | train step s/clip | compile fwd / train (s) | matmul GMAC/s | '
      'forward GMAC/s (% of matmul) | train GMAC/s (% of matmul) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in results['networks']:
    lines.append(
        f"| {r['network']} | {r['gmacs_per_clip']:.1f} | {r['forward_s_per_clip']:.3f} | "
        f"{r['train_step_s_per_clip']:.3f} | {r['forward_compile_s']:.0f} / {r['train_step_compile_s']:.0f} | "
        f"{r['matmul_gmacs_per_s']:.0f} | "
        f"{r['forward_gmacs_per_s']:.1f} ({100 * r['forward_fraction_of_matmul']:.0f}%) | "
        f"{r['train_gmacs_per_s']:.1f} ({100 * r['train_fraction_of_matmul']:.0f}%) |")
  return '\n'.join(lines)


def main() -> None:
  """Runs the benchmark and writes the results."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=3, help='timed runs per measurement (after one warm-up)')
  parser.add_argument('--batch', type=int, default=2, help='clips per batch')
  parser.add_argument('--frames', type=int, default=8, help='frames per clip')
  parser.add_argument('--size', type=int, default=224, help='height and width of the clips')
  parser.add_argument('--matmul_size', type=int, default=2048, help='n of the n×n reference matmul')
  parser.add_argument('--models', default=','.join(NETWORKS), help=f'comma-separated among {list(NETWORKS)}')
  parser.add_argument('--conv', default='auto', help="comma-separated convolution implementations among 'auto' "
                      "(folded on CPU, native elsewhere), 'folded', 'native'")
  parser.add_argument('--pool', default='auto', help="comma-separated max-pool implementations among 'auto' "
                      "(window for now), 'window', 'slices'")
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  parser.add_argument('--name', default='models', help='results go to <out_dir>/<name>.{json,md}')
  args = parser.parse_args()
  keys = [k for k in args.models.split(',') if k]
  unknown = [k for k in keys if k not in NETWORKS]
  if unknown:
    parser.error(f'unknown --models {unknown}; choose among {list(NETWORKS)}.')
  convs = [c for c in args.conv.split(',') if c]
  if any(c not in ('auto', 'folded', 'native') for c in convs):
    parser.error(f"--conv takes 'auto', 'folded' and 'native', got {args.conv!r}.")
  pools = [p for p in args.pool.split(',') if p]
  if any(p not in pooling.POOL_IMPLEMENTATIONS for p in pools):
    parser.error(f'--pool takes {", ".join(map(repr, pooling.POOL_IMPLEMENTATIONS))}, got {args.pool!r}.')

  results = {'machine': machine(), 'settings': {k: getattr(args, k) for k in
                                                 ('repeats', 'batch', 'frames', 'size', 'matmul_size', 'conv',
                                                  'pool')}}
  print(f"{results['machine']}", flush=True)
  results['networks'] = [bench_network(k, c, p, args) for c in convs for p in pools for k in keys]
  table = markdown(results)
  print(table)
  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, f'{args.name}.json'), 'w') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(args.out_dir, f'{args.name}.md'), 'w') as f:
    f.write(f"# python bench/models.py {' '.join(sys.argv[1:])}\n\n" + table + '\n')


if __name__ == '__main__':
  main()
