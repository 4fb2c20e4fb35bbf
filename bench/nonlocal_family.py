"""The non-local family side by side: multiply-adds, time and memory of every block kind in one run (issue 17).

    python bench/nonlocal_family.py                                   # the default plan below (a few minutes)
    python bench/nonlocal_family.py --shapes=res4 --batches=1,8 --repeats=3
    python bench/nonlocal_family.py --kinds=nonlocal,nonlocal_frugal,cgnl --shapes=res3

For each shape and batch, every block kind (``nonlocal_jax.layers.family.BLOCK_KINDS``, two of them measured in
two settings: ``MEASURED_KINDS``) is measured in one process, round-robin so that machine noise hits all alike:

- multiply-adds of one forward pass, counted analytically by one function per kind (``MACS``; the matrix
  products and contractions only: softmax, normalisation, pooling and elementwise products are not counted), and
  the same count read off the traced program (every dot_general of the forward jaxpr, scan bodies times their
  length) as a check that the formula describes the code; XLA's own flop count of the compiled forward is
  recorded too,
- forward and forward+backward median wall time (train mode, gradients w.r.t. parameters and input),
- XLA's temporary memory of the compiled forward and forward+backward programs, and what the block keeps from its
  forward pass for its backward pass (the jax.vjp residuals, parameters and input included).

The non-local block runs twice: 'nonlocal' is its naive path (the N×N affinity materialised), 'nonlocal_frugal'
the query-chunked path (exact, O(chunk·N) memory); both embedded Gaussian, C' = C/2, keys and values subsampled
by 2×2 in space as in the paper. Every other kind runs with its defaults (``KIND_OPTIONS`` lists the exceptions).

Writes bench/results/nonlocal_family.json and .md, with the machine and its load average before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from nonlocal_jax.layers.family import BLOCK_KINDS  # noqa: E402

# name: (spatial shape, C, the non-local block's key/value subsampling window). The paper's res4, res3 and an
# 8-frame res3 (video, keys and values pooled 2×2 in space as in the paper), and the 2D segmentation map at which
# the APNB and CCNet papers state their savings (97×97 with 512 channels after the backbone's reduction), where
# the non-local block they compare against is not subsampled.
SHAPES = {
    'res4': ((4, 14, 14), 1024, (1, 2, 2)),
    'res3': ((4, 28, 28), 512, (1, 2, 2)),
    'clip8': ((8, 28, 28), 512, (1, 2, 2)),
    'seg97': ((97, 97), 512, None),
}
# (shape, batch) pairs the default run leaves out on a 2-core CPU, and why (--skip= runs them).
DEFAULT_SKIP = 'clip8:8,seg97:8'
# The kinds in table order. (module, class) of each; 'nonlocal_frugal' is the non-local block on its chunked path.
# Measured kind: its block kind in nonlocal_jax.layers.family.BLOCK_KINDS (settings differ: KIND_OPTIONS).
MEASURED_KINDS = {'nonlocal': 'nonlocal', 'nonlocal_frugal': 'nonlocal', 'gc': 'gc', 'apnb': 'apnb', 'cc': 'cc',
                  'cgnl': 'cgnl', 'cgnl_gaussian': 'cgnl', 'a2': 'a2'}
# What each measured kind sets beyond its defaults ('subsample' is filled in per rank for the non-local block).
KIND_OPTIONS = {
    'nonlocal': dict(pairwise='embedded_gaussian', implementation='naive'),
    'nonlocal_frugal': dict(pairwise='embedded_gaussian', implementation='chunked', chunk_size=256),
    'cgnl': dict(kernel='dot_product', groups=8),
    'cgnl_gaussian': dict(kernel='gaussian', order=3, groups=8),
}
MIB = 2.0**20


def kind_table() -> Dict[str, type]:
  """{measured kind: its block class}."""
  return {kind: BLOCK_KINDS[base] for kind, base in MEASURED_KINDS.items()}


def make_block(kind: str, cls: type, shape_name: str):
  """The block measured for ``kind`` at shape ``shape_name``."""
  options = dict(KIND_OPTIONS.get(kind, {}))
  if kind.startswith('nonlocal'):
    options['subsample'] = SHAPES[shape_name][2]
  return cls(**options)


# --- Multiply-adds: one function per kind, (block, spatial shape, C) -> MACs per batch element ------------------


def _attr(block, names, default):
  """The first of ``names`` that the block defines and is not None, else ``default``."""
  for name in names:
    value = getattr(block, name, None)
    if value is not None:
      return value
  return default


def macs_nonlocal(block, spatial, channels):
  """θ on N queries; φ, g on the Nk pooled keys (pooled before, the official order); θφᵀ and its product with g;
  W_z back to C."""
  n = math.prod(spatial)
  window = tuple(block.subsample or (1,) * len(spatial))
  n_key = math.prod(s // w for s, w in zip(spatial, window))
  inter = block.inter_channels or channels // 2
  return n * channels * inter + 2 * n_key * channels * inter + 2 * n * n_key * inter + n * inter * channels


def macs_cgnl(block, spatial, channels):
  """θ, φ, g; per Taylor term p (one for the dot product) Σ φ^p g over the N·C' elements; W_z grouped."""
  n = math.prod(spatial)
  inter = block.inter_channels or channels // 2
  terms = 1 if block.kernel == 'dot_product' else block.order + 1
  return 3 * n * channels * inter + terms * n * inter + n * (inter // block.groups) * channels


def macs_a2(block, spatial, channels):
  """φ (m), θ and ρ (n each); gathering G = A softmax(B)ᵀ and distribution, N·n·m each; W_out m -> C."""
  n_pos = math.prod(spatial)
  n = block.descriptors or channels // 4
  m = block.descriptor_channels or channels // 4
  return n_pos * channels * (m + 2 * n) + 2 * n_pos * n * m + n_pos * m * channels


def macs_gc(block, spatial, channels):
  """GCNet: W_k (C -> 1) at every position, the attention-weighted sum of x, the bottleneck C -> C/r -> C."""
  n = math.prod(spatial)
  ratio = _attr(block, ('ratio', 'reduction', 'bottleneck_ratio'), 1 / 16)
  width = int(channels * ratio) if ratio < 1 else channels // int(ratio)
  return 2 * n * channels + 2 * channels * width


def macs_apnb(block, spatial, channels):
  """APNB as built (docs/family.md §2): θ on N queries; the pyramid pooling of x (one contraction with a pooling
  matrix per pooled axis and level); φ and g on the S anchors; the N·S affinity and its product with g; W_z back
  to C (the default fusion='sum'; 'concat' adds its 2C -> C convolution)."""
  n = math.prod(spatial)
  inter = block.inter_channels or channels // 2
  anchors = block.num_anchors(spatial)
  pooling = 0
  for level in block.bins:
    sizes = list(spatial)
    for axis, matrix in enumerate(block._pool_matrices(spatial, level)):  # pylint: disable=protected-access
      if matrix is not None:
        pooling += math.prod(sizes) * matrix.shape[0] * channels
        sizes[axis] = matrix.shape[0]
  fusion = 2 * channels * channels * n if block.fusion == 'concat' else 0
  return (n * channels * inter + pooling + 2 * anchors * channels * inter + 2 * n * anchors * inter
          + n * inter * channels + fusion)


def macs_cc(block, spatial, channels):
  """CCNet: per recurrence, q, k (C/8) and v (C) projections and, at each position, the row, column (and time
  line) of T+H+W-2 keys (H+W-1 in 2D) for the affinity and the product with v."""
  n = math.prod(spatial)
  inter = _attr(block, ('inter_channels', 'key_channels'), channels // 8)
  recurrence = _attr(block, ('recurrence', 'recurrences', 'loops'), 2)
  line = sum(spatial) - (len(spatial) - 1)
  return recurrence * (n * channels * (2 * inter + channels) + n * line * (inter + channels))


MACS: Dict[str, Callable] = {
    'nonlocal': macs_nonlocal, 'nonlocal_frugal': macs_nonlocal, 'gc': macs_gc, 'apnb': macs_apnb, 'cc': macs_cc,
    'cgnl': macs_cgnl, 'cgnl_gaussian': macs_cgnl, 'a2': macs_a2,
}


def traced_macs(fn, *args) -> int:
  """Multiply-adds of every dot_general in ``fn``'s jaxpr (sub-jaxprs included, scan bodies × length)."""
  return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
    times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
    for value in eqn.params.values():
      for item in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(item, 'jaxpr', item)
        if hasattr(sub, 'eqns'):
          total += times * _jaxpr_macs(sub)
  return total


# --- Programs ----------------------------------------------------------------------------------------------------


def programs(block, x):
  """Runnable forward and forward+backward, their compiled temporary memory and XLA flops, the bytes kept for
  the backward pass and the traced multiply-adds of one forward pass."""
  variables = block.init(jax.random.key(0), x[:1], False)
  # Every parameter moved off its initial value: zero-initialised gates (BN/GN scale, W_out) would otherwise cut
  # the backward pass short.
  params = jax.tree.map(lambda p: p + 0.01, variables['params'])
  state = {k: v for k, v in variables.items() if k != 'params'}

  def forward(params, x):
    if state:
      return block.apply({'params': params, **state}, x, True, mutable=list(state))[0]
    return block.apply({'params': params}, x, True)

  def forward_backward(params, x, dz):
    z, vjp = jax.vjp(forward, params, x)
    return z, vjp(dz)

  dz = jnp.ones_like(x)
  fwd = jax.jit(forward).lower(params, x).compile()
  fwd_bwd = jax.jit(forward_backward).lower(params, x, dz).compile()
  residuals = jax.eval_shape(lambda params, x: jax.vjp(forward, params, x)[1], params, x)
  cost = fwd.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(
      run_fwd=lambda: jax.block_until_ready(fwd(params, x)),
      run_fwd_bwd=lambda: jax.block_until_ready(fwd_bwd(params, x, dz)),
      fwd_temp=fwd.memory_analysis().temp_size_in_bytes,
      fwd_bwd_temp=fwd_bwd.memory_analysis().temp_size_in_bytes,
      kept=sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(residuals)),
      xla_flops=float((cost or {}).get('flops', float('nan'))),
      traced_macs=traced_macs(forward, params, x))


def run(shape_names, batches, kinds, repeats, skip=()):
  """Measures every (shape, batch, kind) but the (shape, batch) pairs in ``skip``; returns the result rows."""
  found = kind_table()
  rows = []
  for shape_name in shape_names:
    spatial, channels, _ = SHAPES[shape_name]
    for batch in batches:
      if (shape_name, batch) in skip:
        continue
      x = jax.random.normal(jax.random.key(1), (batch,) + spatial + (channels,), jnp.float32)
      measured, timed = {}, {}
      for kind in kinds:
        if kind not in found:
          continue
        block = make_block(kind, found[kind], shape_name)
        measured[kind] = programs(block, x)
        measured[kind]['macs'] = batch * MACS[kind](block, spatial, channels)
        timed[f'{kind}/fwd'] = measured[kind].pop('run_fwd')
        timed[f'{kind}/fwd_bwd'] = measured[kind].pop('run_fwd_bwd')
      times = common.time_interleaved(timed, repeats)
      for kind, m in measured.items():
        row = dict(shape=shape_name, size='x'.join(map(str, spatial + (channels,))), batch=batch, kind=kind,
                   gmacs=m['macs'] / 1e9, traced_gmacs=m['traced_macs'] / 1e9, xla_gflops=m['xla_flops'] / 1e9,
                   fwd_ms=1e3 * times[f'{kind}/fwd'], fwd_bwd_ms=1e3 * times[f'{kind}/fwd_bwd'],
                   fwd_temp_mib=m['fwd_temp'] / MIB, fwd_bwd_temp_mib=m['fwd_bwd_temp'] / MIB,
                   kept_mib=m['kept'] / MIB)
        rows.append(row)
        print(f"{shape_name} b{batch} {kind:15s} {row['gmacs']:8.3f} GMACs (traced {row['traced_gmacs']:8.3f})  "
              f"fwd {row['fwd_ms']:9.1f} ms  fwd+bwd {row['fwd_bwd_ms']:9.1f} ms  temp fwd "
              f"{row['fwd_temp_mib']:8.1f} / fwd+bwd {row['fwd_bwd_temp_mib']:8.1f} MiB  kept {row['kept_mib']:8.1f} "
              'MiB', flush=True)
  return rows


# The successors' published cost claims against the non-local block, checked at their own 2D setting (seg97, batch
# 1). Memory is compared on the forward+backward programs: XLA:CPU fuses the naive forward's dot-softmax-dot into one
# library call whose scratch its memory analysis does not see (see to_markdown), so forward figures understate it.
CLAIMS = (
    ('apnb', 'seg97', 'fwd_speedup', 6.0, 'APNB (Zhu et al. 2019): about 6× faster than the non-local block'),
    ('apnb', 'seg97', 'fwd_bwd_memory_saving', 28.0, 'APNB: about 28× less memory'),
    ('cc', 'seg97', 'fwd_bwd_memory_saving', 11.0, 'CCNet (Huang et al. 2019): 11× less memory'),
    ('cc', 'seg97', 'fewer_macs_pct', 85.0, 'CCNet: about 85 % fewer FLOPs'),
)


def check_claims(comparison):
  """Each claim of ``CLAIMS`` with the measured value (batch 1) and whether it is reached; None where not measured."""
  measured = {(c['kind'], c['shape']): c for c in comparison if c['batch'] == 1}
  out = []
  for kind, shape, metric, claimed, text in CLAIMS:
    value = measured.get((kind, shape), {}).get(metric)
    out.append(dict(kind=kind, shape=shape, metric=metric, claimed=claimed, measured=value, claim=text,
                    reached=None if value is None else bool(value >= claimed)))
  return out


def versus_nonlocal(rows):
  """Each kind against the naive non-local block at the same shape and batch: ratios of MACs, time, memory."""
  naive = {(r['shape'], r['batch']): r for r in rows if r['kind'] == 'nonlocal'}
  out = []
  for r in rows:
    base = naive.get((r['shape'], r['batch']))
    if base is None or r['kind'] == 'nonlocal':
      continue
    ratio = lambda key: base[key] / r[key] if r[key] else float('inf')
    out.append(dict(shape=r['shape'], batch=r['batch'], kind=r['kind'], fewer_macs_pct=100 * (1 - r['gmacs'] /
                    base['gmacs']), fwd_speedup=ratio('fwd_ms'), fwd_bwd_speedup=ratio('fwd_bwd_ms'),
                    fwd_memory_saving=ratio('fwd_temp_mib'), fwd_bwd_memory_saving=ratio('fwd_bwd_temp_mib')))
  return out


def to_markdown(rows, comparison, machine, load, left_out=(), claims=()):
  """The full table, the comparison with the naive non-local block, and the claims."""
  header = ['shape', 'batch', 'kind', 'GMACs', 'traced GMACs', 'XLA GFLOPs', 'fwd ms', 'fwd+bwd ms',
            'fwd temp MiB', 'fwd+bwd temp MiB', 'kept for backward MiB']
  table = [[r['size'], r['batch'], r['kind'], f"{r['gmacs']:.3f}", f"{r['traced_gmacs']:.3f}"
            + ('' if abs(r['traced_gmacs'] - r['gmacs']) <= 0.01 * r['gmacs'] else ' (≠)'),
            f"{r['xla_gflops']:.2f}", f"{r['fwd_ms']:.1f}", f"{r['fwd_bwd_ms']:.1f}", f"{r['fwd_temp_mib']:.1f}",
            f"{r['fwd_bwd_temp_mib']:.1f}", f"{r['kept_mib']:.1f}"] for r in rows]
  c_header = ['shape', 'batch', 'kind', 'fewer MACs than NL', 'fwd speed-up', 'fwd+bwd speed-up',
              'fwd memory saving', 'fwd+bwd memory saving']
  c_table = [[c['shape'], c['batch'], c['kind'], f"{c['fewer_macs_pct']:.1f} %", f"{c['fwd_speedup']:.2f}×",
              f"{c['fwd_bwd_speedup']:.2f}×", f"{c['fwd_memory_saving']:.1f}×", f"{c['fwd_bwd_memory_saving']:.1f}×"]
             for c in comparison]
  return (f'Measured on: {common.machine_line(machine)}; load average (1, 5, 15 min) {load["before"]} before, '
          f'{load["after"]} after. float32, train mode, median of the timed runs. GMACs: the analytic count of one '
          'forward pass (matrix products and contractions); "traced": the same read off the program, marked ≠ '
          'where they differ by more than 1 %; XLA GFLOPs: XLA\'s count for the compiled forward (loop bodies may '
          'count once). Memory: XLA\'s temporary allocation of the compiled program; "kept for backward": the '
          'jax.vjp residuals (input and parameters included). XLA:CPU fuses the naive non-local forward\'s '
          'dot-softmax-dot into one library (YNNPACK) fusion whose internal buffers its memory analysis does not '
          'count, so forward temporary memory is a lower bound there; the forward+backward program keeps the affinity '
          'for the backward pass and counts it. nonlocal = the naive path, nonlocal_frugal = the '
          'query-chunked path (chunk 256), both embedded Gaussian, C\' = C/2, keys and values pooled 2×2 in space on '
          'the video shapes and not pooled on the 2D map (as the APNB and CCNet papers compare).\n\n'
          + common.markdown_table(header, table)
          + '\n\nAgainst the naive non-local block (speed-ups and savings > 1 favour the kind):\n\n'
          + common.markdown_table(c_header, c_table)
          + '\n\nPublished claims, at the 2D map 97×97×512, batch 1 (memory: forward+backward programs):\n\n'
          + common.markdown_table(['claim', 'metric', 'claimed', 'measured here', 'reached'], [
              [c['claim'], c['metric'], c['claimed'], '-' if c['measured'] is None else f"{c['measured']:.1f}",
               'not measured (kind not run)' if c['reached'] is None else ('yes' if c['reached'] else 'no')]
              for c in claims])
          + (f'\n\nShapes and batches left out of this run (time on this CPU): {", ".join(left_out)}.'
             if left_out else '') + '\n')


def main(argv=None):
  """Parses flags, runs the benchmark, writes the JSON and markdown results."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--shapes', default='res4,res3,clip8,seg97', help=f'comma-separated subset of {list(SHAPES)}')
  parser.add_argument('--batches', default='1,8', help='comma-separated batch sizes')
  parser.add_argument('--skip', default=DEFAULT_SKIP, help='comma-separated shape:batch pairs to leave out')
  parser.add_argument('--kinds', default=','.join(MEASURED_KINDS), help=f'comma-separated subset of '
                      f'{list(MEASURED_KINDS)}')
  parser.add_argument('--repeats', type=int, default=3, help='timed runs per program (median reported)')
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  parser.add_argument('--stem', default='nonlocal_family', help='results file name, without extension')
  args = parser.parse_args(argv)
  shapes, kinds = args.shapes.split(','), args.kinds.split(',')
  if any(s not in SHAPES for s in shapes):
    parser.error(f'--shapes must be a subset of {list(SHAPES)}, got {shapes}.')
  if any(k not in MEASURED_KINDS for k in kinds):
    parser.error(f'--kinds must be a subset of {list(MEASURED_KINDS)}, got {kinds}.')
  batches = [int(b) for b in args.batches.split(',')]
  skip = {(pair.split(':')[0], int(pair.split(':')[1])) for pair in args.skip.split(',') if pair}
  machine = common.machine_description()
  load = {'before': tuple(round(v, 2) for v in os.getloadavg())}
  rows = run(shapes, batches, kinds, args.repeats, skip)
  load['after'] = tuple(round(v, 2) for v in os.getloadavg())
  comparison = versus_nonlocal(rows)
  claims = check_claims(comparison)
  left_out = sorted(f'{s}:{b}' for s, b in skip if s in shapes and b in batches)
  payload = dict(machine=machine, load_average=load, repeats=args.repeats, skipped_shapes=left_out,
                 rows=rows, versus_nonlocal=comparison, claims=claims)
  common.write_results(args.stem, payload, to_markdown(rows, comparison, machine, load, left_out, claims),
                       args.out_dir)
  return np.asarray([r['gmacs'] for r in rows])


if __name__ == '__main__':
  main()
