"""Benchmark of the non-local block: time and temporary memory of every implementation path.

    python bench/nonlocal_block.py                      # all shapes, batch 1 and 8 (about 30 min on 2 cores)
    python bench/nonlocal_block.py --batches=1 --shapes=res4,res3 --repeats=3
    python bench/nonlocal_block.py --shapes=clip8 --batches=8 --repeats=1 --stem=nonlocal_block_remat  # ~2 min

For each shape from the paper (subsampling (1, 2, 2), C' = C/2), each pairwise function and each
implementation that applies to it, it measures in one process, round-robin so that noise hits all alike:

- block forward and forward+backward median wall time (train mode, gradients w.r.t. parameters and input),
- the compiled programs' temporary memory (XLA memory analysis) for the block's forward+backward and for the
  pairwise computation alone (θ, φ, g -> y and back), which is the part the implementations differ in,
- what the block keeps from its forward pass for its backward pass (the residuals of ``jax.vjp``, parameters and
  input included): in a network this is held per block from the block's forward to its backward, so it is what
  adds up over a long clip; the rest of the block's temporary memory is needed by one block at a time.

With ``--remat`` (default on) the naive and the frugal path also run rematerialised as ``model.remat='nonlocal'``
runs them (``nn.remat`` with nothing saved): the block keeps only its input and recomputes the rest in the
backward pass. Alone in a program its forward+backward peak is unchanged (the recomputation rebuilds the same
activations just before they are needed); what it saves is the memory kept between the passes.

Writes bench/results/nonlocal_block.json and bench/results/nonlocal_block.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from nonlocal_jax.layers import PAIRWISE, NonLocalBlock, attention  # noqa: E402
from nonlocal_jax.models.base import REMAT_POLICY  # noqa: E402

# (name, T, H, W, C): res4 and res3 of the 32x2 models, and the longer clips of Table 2g.
SHAPES = {
    'res4': (4, 14, 14, 1024),
    'res3': (4, 28, 28, 512),
    'clip8': (8, 28, 28, 512),
    'clip16': (16, 28, 28, 512),
}


def _computes(impl, pairwise):
  try:
    attention.check_implementation(impl, pairwise)
    return True
  except ValueError:
    return False


# Per pairwise function (the table in nonlocal_jax.layers.pairwise): every exact path that computes it, and the
# frugal one (the reassociated product where f is linear, else the query-chunked path).
# cuDNN's attention takes bf16/fp16 only and this benchmark is float32: bench/device.py measures it.
IMPLEMENTATIONS = {p: tuple(i for i in attention.IMPLEMENTATIONS[1:] if i != 'cudnn' and _computes(i, p))
                   for p in PAIRWISE}
FRUGAL = {p: 'reassociated' if f.linear else 'chunked' for p, f in PAIRWISE.items()}
MIB = 2.0**20


def _block_programs(pairwise, impl, x, chunk_size, remat=False):
  """Jitted block forward and forward+backward, the latter's temporary memory, and the bytes the block keeps
  from its forward pass for its backward pass (rematerialised as ``model.remat`` does when ``remat``)."""
  # Argument 2 of __call__ (self, x, train) is the Python bool train: static.
  cls = nn.remat(NonLocalBlock, policy=REMAT_POLICY, static_argnums=(2,)) if remat else NonLocalBlock
  block = cls(pairwise=pairwise, subsample=(1, 2, 2), implementation=impl, chunk_size=chunk_size)
  variables = block.init(jax.random.key(0), x[:1], False)
  params = jax.tree.map(lambda p: p + 0.01, variables['params'])  # a non-zero BN scale: a real gradient path
  stats = variables['batch_stats']

  def forward(params, x):
    z, _ = block.apply({'params': params, 'batch_stats': stats}, x, True, mutable=['batch_stats'])
    return z

  def forward_backward(params, x, dz):
    z, vjp = jax.vjp(forward, params, x)
    return z, vjp(dz)

  fwd = jax.jit(forward)
  fwd_bwd = jax.jit(forward_backward)
  dz = jnp.ones_like(x)
  compiled = fwd_bwd.lower(params, x, dz).compile()
  memory = compiled.memory_analysis().temp_size_in_bytes
  residuals = jax.eval_shape(lambda params, x: jax.vjp(forward, params, x)[1], params, x)
  kept = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(residuals))
  run_fwd = lambda: jax.block_until_ready(fwd(params, x))
  run_fwd_bwd = lambda: jax.block_until_ready(compiled(params, x, dz))
  return run_fwd, run_fwd_bwd, memory, kept


def _pairwise_memory(pairwise, impl, batch, shape, chunk_size):
  """Temporary memory of the pairwise computation's forward+backward alone (compiled, not run)."""
  t, h, w, c = shape
  inter = c // 2
  n_query, n_key = t * h * w, t * (h // 2) * (w // 2)
  d_query = c if pairwise == 'gaussian' else inter
  spec = lambda n, d: jax.ShapeDtypeStruct((batch, n, d), jnp.float32)
  kernel = jax.ShapeDtypeStruct((2 * d_query, 1), jnp.float32)

  def forward_backward(q, k, v, w_f, dy):
    fn = lambda q, k, v, w_f: attention.nonlocal_attention(
        pairwise, q, k, v, implementation=impl, logit_scale=inter**-0.5, concat_kernel=w_f, chunk_size=chunk_size)
    y, vjp = jax.vjp(fn, q, k, v, w_f)
    return y, vjp(dy)

  lowered = jax.jit(forward_backward).lower(spec(n_query, d_query), spec(n_key, d_query), spec(n_key, inter),
                                            kernel, spec(n_query, inter))
  return lowered.compile().memory_analysis().temp_size_in_bytes


def variants(pairwise, remat):
  """(implementation, rematerialised) pairs measured for ``pairwise``: every path, and with ``remat`` the naive
  and the frugal path rematerialised."""
  plain = [(impl, False) for impl in IMPLEMENTATIONS[pairwise]]
  return plain + ([('naive', True), (FRUGAL[pairwise], True)] if remat else [])


def _label(impl, remat):
  return f'{impl}+remat' if remat else impl


def run(shapes, batches, pairwise_functions, repeats, chunk_size, remat=True):
  """Measures every (shape, batch, pairwise, implementation[, remat]); returns a list of result rows."""
  rows = []
  for shape_name in shapes:
    t, h, w, c = SHAPES[shape_name]
    for batch in batches:
      x = jax.random.normal(jax.random.key(1), (batch, t, h, w, c), jnp.float32)
      for pairwise in pairwise_functions:
        programs, memory = {}, {}
        for impl, rematerialised in variants(pairwise, remat):
          label = _label(impl, rematerialised)
          run_fwd, run_fwd_bwd, block_mem, kept = _block_programs(pairwise, impl, x, chunk_size, rematerialised)
          programs[f'{label}/fwd'] = run_fwd
          programs[f'{label}/fwd_bwd'] = run_fwd_bwd
          memory[label] = (block_mem, _pairwise_memory(pairwise, impl, batch, (t, h, w, c), chunk_size), kept)
        times = common.time_interleaved(programs, repeats)
        for impl, rematerialised in variants(pairwise, remat):
          label = _label(impl, rematerialised)
          row = dict(shape=shape_name, thwc=f'{t}x{h}x{w}x{c}', batch=batch, pairwise=pairwise,
                     implementation=impl, remat=rematerialised, fwd_ms=1e3 * times[f'{label}/fwd'],
                     fwd_bwd_ms=1e3 * times[f'{label}/fwd_bwd'], block_temp_mib=memory[label][0] / MIB,
                     pairwise_temp_mib=memory[label][1] / MIB, kept_mib=memory[label][2] / MIB)
          rows.append(row)
          print(f"{shape_name} b{batch} {pairwise:18s} {label:18s} fwd {row['fwd_ms']:9.1f} ms  "
                f"fwd+bwd {row['fwd_bwd_ms']:9.1f} ms  block temp {row['block_temp_mib']:8.1f} MiB  "
                f"pairwise temp {row['pairwise_temp_mib']:8.1f} MiB  kept {row['kept_mib']:8.1f} MiB", flush=True)
  return rows


def summarise(rows):
  """Frugal path, and the rematerialised paths, versus the naive whole block for each (shape, batch, pairwise):
  memory and time ratios."""
  summary = []
  index = {(r['shape'], r['batch'], r['pairwise'], _label(r['implementation'], r.get('remat', False))): r
           for r in rows}
  for (shape, batch, pairwise, label), naive in index.items():
    if label != 'naive':
      continue
    for other in (FRUGAL[pairwise], 'naive+remat', f'{FRUGAL[pairwise]}+remat'):
      frugal = index.get((shape, batch, pairwise, other))
      if frugal is None:
        continue
      summary.append(dict(shape=shape, batch=batch, pairwise=pairwise, frugal=other,
                          pairwise_memory_ratio=frugal['pairwise_temp_mib'] / naive['pairwise_temp_mib'],
                          block_memory_ratio=frugal['block_temp_mib'] / naive['block_temp_mib'],
                          kept_memory_ratio=frugal['kept_mib'] / naive['kept_mib'],
                          fwd_bwd_time_ratio=frugal['fwd_bwd_ms'] / naive['fwd_bwd_ms']))
  return summary


def to_markdown(rows, summary, machine):
  """The results as markdown: the full table and the frugal-versus-naive summary."""
  header = ['shape (T×H×W×C)', 'batch', 'pairwise', 'implementation', 'fwd ms', 'fwd+bwd ms',
            'block fwd+bwd temp MiB', 'pairwise fwd+bwd temp MiB', 'kept for backward MiB']
  table = [[r['thwc'], r['batch'], r['pairwise'], _label(r['implementation'], r.get('remat', False)),
            f"{r['fwd_ms']:.1f}", f"{r['fwd_bwd_ms']:.1f}", f"{r['block_temp_mib']:.1f}",
            f"{r['pairwise_temp_mib']:.1f}", f"{r['kept_mib']:.1f}" if 'kept_mib' in r else '-'] for r in rows]
  s_header = ['shape', 'batch', 'pairwise', 'path', 'pairwise memory vs naive', 'block memory vs naive',
              'kept for backward vs naive', 'fwd+bwd time vs naive']
  s_table = [[s['shape'], s['batch'], s['pairwise'], s['frugal'], f"{s['pairwise_memory_ratio']:.3f}",
              f"{s['block_memory_ratio']:.3f}", f"{s['kept_memory_ratio']:.3f}",
              f"{s['fwd_bwd_time_ratio']:.2f}"] for s in summary]
  return (f'Measured on: {common.machine_line(machine)}. Subsampling (1, 2, 2), C\' = C/2, float32, median of '
          'the timed runs; memory is XLA\'s temporary allocation of the compiled program; "kept for backward" is '
          'what the block\'s forward pass keeps for its backward pass (jax.vjp residuals, input and parameters '
          'included), which a network holds per block; "+remat" is the block rematerialised as '
          'model.remat=\'nonlocal\' runs it.\n\n'
          + common.markdown_table(header, table) + '\n\nFrugal and rematerialised paths versus the naive whole '
          'block (ratios; < 1 is better):\n\n'
          + common.markdown_table(s_header, s_table))


def main(argv=None):
  """Parses flags, runs the benchmark, writes the JSON and markdown results."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--shapes', default=','.join(SHAPES), help=f'comma-separated subset of {list(SHAPES)}')
  parser.add_argument('--batches', default='1,8', help='comma-separated batch sizes')
  parser.add_argument('--pairwise', default=','.join(IMPLEMENTATIONS), help='comma-separated pairwise functions')
  parser.add_argument('--repeats', type=int, default=3, help='timed runs per program (median reported)')
  parser.add_argument('--chunk_size', type=int, default=256, help='queries per block of the chunked path')
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  parser.add_argument('--stem', default='nonlocal_block', help='results file name, without extension')
  parser.add_argument('--remat', action=argparse.BooleanOptionalAction, default=True,
                      help='also measure the naive and frugal paths rematerialised (model.remat)')
  args = parser.parse_args(argv)
  shapes = args.shapes.split(',')
  unknown = [s for s in shapes if s not in SHAPES]
  if unknown:
    parser.error(f'unknown shapes {unknown}; choose from {list(SHAPES)}.')
  pairwise = args.pairwise.split(',')
  if any(p not in IMPLEMENTATIONS for p in pairwise):
    parser.error(f'--pairwise must be a subset of {list(IMPLEMENTATIONS)}.')
  batches = [int(b) for b in args.batches.split(',')]
  machine = common.machine_description()
  rows = run(shapes, batches, pairwise, args.repeats, args.chunk_size, args.remat)
  summary = summarise(rows)
  payload = dict(machine=machine, chunk_size=args.chunk_size, repeats=args.repeats, rows=rows, summary=summary)
  common.write_results(args.stem, payload, to_markdown(rows, summary, machine), args.out_dir)
  return np.asarray([s['pairwise_memory_ratio'] for s in summary])


if __name__ == '__main__':
  main()
