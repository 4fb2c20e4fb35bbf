"""One command that measures a device: ``python -m bench.device [--tiny]`` (``bench/device.sh`` on a GPU machine).

Writes ``bench/results/<device slug>/device.{json,md}`` (slug of the device kind: 'NVIDIA H200' -> nvidia-h200)
and the table that ``implementation='auto'`` reads on that device kind,
``nonlocal_jax/layers/attention_tables/<slug>.json`` (with ``--tiny``: ``<out_dir>/<slug>/attention_auto.json``,
never the package's). It measures:

- the matrix-multiply rate: an n×n product in bfloat16 and in float32 (n = 8192);
- training clips/s of R50 C2D + 5 NL, R50 C2D and R50 I3D + 5 NL at 8×224² (the official 8x8 stem), batch 8, in
  bfloat16 and float32, on fake data (``Trainer.train_step`` on one batch already on the device, state threaded
  and donated as in training), with the compile time and the fraction of the bfloat16 matmul rate that the step
  reaches (a train step is ~3× the forward multiply-adds of ``nonlocal_jax.models.summary``); C2D + 5 NL in bf16
  also with the blocks' cuDNN and 'lean' attention, with the model's other convolution and max-pool formulations
  and at 32 and 64 clips (``bench.device_plan``); the fastest formulation per kind of network, C2D or I3D, goes
  into the table for the models' 'auto' (``device_run.formulations``);
- the non-local block at the paper's shapes (res3 4×28×28×512, res4 4×14×14×1024, 8×28×28 and 16×28×28 at
  C=512; batch 8) for the embedded Gaussian and the dot product: every exact implementation, cuDNN's where the
  backend takes it, float32 and bfloat16, forward and forward+backward time (median of --repeats after
  compilation) and the compiled forward+backward's temporary memory (``memory_analysis``; on GPUs also the
  device's peak so far, ``memory_stats``, which JAX cannot reset between programs);
- the training loop's host-to-device call on one uint8 batch (``feed_piece``): how long it holds the thread that
  takes the pipeline's batches, and when the batch is on the device;
- the input pipeline (``bench/input_pipeline.py --quick``) if TensorFlow, TFDS and PyAV import, else one line.

The order is ``device_plan.FULL['plan']``: what matters most first. A piece that fails is recorded with its error
and the run goes on; results (and the table) are rewritten after every piece, and pieces that would start after
``--budget_s`` are recorded as skipped, so one try on a lent device always leaves figures. ``--resume`` keeps an
earlier run's finished pieces, except a block case that lacks an implementation added since (``lean``), which runs
again whole. ``--tiny`` shrinks
everything (tiny network, block shape, matmul, steps) to run on a CPU: tests/bench/test_device.py runs it with
TensorFlow made unimportable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import common
from bench import device_plan
from bench import device_profile
from bench import device_report
from bench import device_run
from bench import hlo_roofline
from bench import models as models_bench
from bench import nonlocal_block as block_bench
from nonlocal_jax.data import fake
from nonlocal_jax.layers import attention, attention_auto, pooling
from nonlocal_jax.models import blocks
from nonlocal_jax.models.resnet_video import formulation_network
from nonlocal_jax.models.summary import analyse
from nonlocal_jax.training import parallel
from nonlocal_jax.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2.0**20


@contextlib.contextmanager
def _attention_fallbacks():
  """Collects the lines the attention logs when a path falls back (cuDNN refused), so that a row never shows a
  fallback's time under the path that was asked for."""
  lines = []
  attention._logged.clear()  # pylint: disable=protected-access  # Each line is logged once per process.
  handler = logging.Handler(logging.WARNING)
  handler.emit = lambda record: lines.append(record.getMessage())
  logger = logging.getLogger(attention.__name__)
  logger.addHandler(handler)
  try:
    yield lines
  finally:
    logger.removeHandler(handler)


def _device_peak_mib():
  """The device's peak memory so far (GPU/TPU), or None where the backend keeps no statistics (CPU)."""
  stats = jax.devices()[0].memory_stats()
  return stats['peak_bytes_in_use'] / MIB if stats and 'peak_bytes_in_use' in stats else None


def copy_rate(mib, repeats):
  """Bytes per second (read + written) of ``x + 1`` over a ``mib`` MiB float32 array: the memory's ceiling."""
  x = jnp.zeros((int(mib * MIB) // 4,), jnp.float32)
  add = jax.jit(lambda a: a + 1)
  seconds = common.time_interleaved({'copy': lambda: jax.block_until_ready(add(x))}, repeats)['copy']
  return 2 * x.nbytes / seconds


def matmul_piece(size, copy_mib, repeats):
  """Multiply-add rates of an n×n matmul in bfloat16 and float32, and the device memory's copy rate."""
  rates = {d: models_bench.matmul_rate(size, repeats, jnp.dtype(d)) for d in device_plan.DTYPES}
  return {'n': size, **{f'{d}_tflops': 2 * r / 1e12 for d, r in rates.items()},
          **{f'{d}_macs_per_s': r for d, r in rates.items()}, 'copy_gb_per_s': copy_rate(copy_mib, 5) / 1e9}


def _hlo_cost(compiled):
  """(flops, bytes accessed) of a compiled program by XLA's cost analysis, None where the backend gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # Optional: some backends and versions raise.
    return None, None
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  if not isinstance(cost, dict):
    return None, None
  return cost.get('flops'), cost.get('bytes accessed')


def _compiled_step(key, dtype, implementation, batch, variant, tiny):
  """(config, trainer, compiled step, state, fake batch on the devices, compile seconds, fallback lines)."""
  config = device_plan.network_config(key, dtype, tiny, implementation, batch, variant)
  mesh = parallel.make_mesh()
  trainer = Trainer(config, mesh)
  d = config.data
  clips = fake.batch_fn(d, kind='video', num_classes=config.model.num_classes,
                        sharding=parallel.batch_sharded(mesh))(0, 0)
  state = trainer.init_state()
  start = time.perf_counter()
  with _attention_fallbacks() as fallbacks:
    options = device_plan.compiler_options(variant) or None
    compiled = trainer.train_step.lower(state, clips).compile(compiler_options=options)
  return config, trainer, compiled, state, clips, time.perf_counter() - start, fallbacks


def train_piece(key, dtype, implementation, batch, variant, steps, tiny, matmul=None, keep=None):
  """Compile time, clips/s and step time of ``Trainer.train_step`` on one fake batch kept on the devices, XLA's
  count of the step's flops and memory traffic (what bounds it: the matrix units or the memory), and, given the
  run's ``matmul`` piece, the least time of the compiled step at its rates (``hlo_roofline.floor``). Given a dict
  ``keep``, leaves the compiled step, its state and batch there for a later profile of the same step."""
  config, trainer, compiled, state, batch, compile_s, fallbacks = _compiled_step(key, dtype, implementation, batch,
                                                                                 variant, tiny)
  d = config.data
  state, metrics = compiled(state, batch)  # Warm-up; the state is donated, so it is threaded through.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - start) / steps
  if keep is not None:
    keep.update(config=config, compiled=compiled, state=state, batch=batch)
  macs = analyse(trainer.model, (1, d.num_frames, d.crop_size, d.crop_size, 3)).macs
  kind = formulation_network(config.model.temporal)
  hlo_flops, hlo_bytes = _hlo_cost(compiled)
  floor = {}
  if hlo_bytes and (matmul or {}).get('status') == 'ok':
    floor = hlo_roofline.floor(hlo_bytes, hlo_roofline.library_calls(compiled.as_text()),
                               matmul[f'{dtype}_tflops'], matmul['copy_gb_per_s'])
  return dict(floor, hlo_tflops=hlo_flops / step_s / 1e12 if hlo_flops else None,
              hlo_gb_per_s=hlo_bytes / step_s / 1e9 if hlo_bytes else None,
              hlo_gb_per_step=hlo_bytes / 1e9 if hlo_bytes else None,
              network=key, dtype=dtype, attention=implementation, variant=variant or '',
              convs=blocks.resolve_conv_implementation(config.model.conv_implementation, kind),
              pools=pooling.resolve(config.model.pool_implementation, kind),
              input=f'{d.global_batch_size}×{d.num_frames}×{d.crop_size}²',
              batch=d.global_batch_size, compile_s=compile_s, step_ms=1e3 * step_s,
              clips_per_s=d.global_batch_size / step_s, gmacs_per_clip=macs / 1e9,
              train_tflops=2 * 3 * macs * d.global_batch_size / step_s / 1e12,
              temp_mib=compiled.memory_analysis().temp_size_in_bytes / MIB, device_peak_mib=_device_peak_mib(),
              loss_finite=bool(np.isfinite(float(metrics['loss']))), fallbacks=fallbacks)


def block_cases(shapes, dtype, pairwise):
  """(shape name, T×H×W×C, implementations to time, refused {impl: why}) of the block benchmark at every shape."""
  for name, (t, h, w, c) in shapes.items():
    impls = [i for i in attention.IMPLEMENTATIONS[1:] if attention.computes(i, pairwise)]
    refused = {}
    if 'cudnn' in impls:
      why = attention_auto.cudnn_refusal(jnp.dtype(dtype), c // 2)
      if why:
        impls.remove('cudnn')
        refused['cudnn'] = why
    yield name, (t, h, w, c), impls, refused


def attention_sizes(shape):
  """(queries, keys, C') of the block's attention at T×H×W×C ``shape``: keys subsampled (1, 2, 2), C' = C/2."""
  t, h, w, c = shape
  return t * h * w, t * (h // 2) * (w // 2), c // 2


def forget_block_case(payload, shape_name, shape, dtype, pairwise, covered) -> bool:
  """After --resume: whether the kept rows of a block case name every implementation in ``covered`` (those timed
  or refused now). If not (an implementation added since), the case's rows and table entry are dropped from
  ``payload`` so that it runs again whole: one run's times are compared with each other, not across leases."""
  same = lambda r: (r['shape'], r['dtype'], r['pairwise']) == (shape_name, dtype, pairwise)
  if set(covered) <= {r['implementation'] for r in payload['block'] if same(r)}:
    return False
  entry = (pairwise, attention_auto.dtype_name(jnp.dtype(dtype)), *attention_sizes(shape))
  payload['block'] = [r for r in payload['block'] if not same(r)]
  payload['auto_entries'] = [e for e in payload['auto_entries']
                             if (e['pairwise'], e['dtype'], e['n_query'], e['n_key'], e['inter']) != entry]
  return True


def block_piece(name, shape, dtype, pairwise, impls, refused, batch, repeats):
  """Rows (one per implementation) of one block case, and its table entry (or None if nothing ran)."""
  t, h, w, c = shape
  x = jax.random.normal(jax.random.key(1), (batch, t, h, w, c), jnp.float32).astype(dtype)
  base = dict(shape=name, thwc=f'{t}x{h}x{w}x{c}', batch=batch, dtype=dtype, pairwise=pairwise)
  rows, programs, memory = [], {}, {}
  for impl in impls:
    try:
      with _attention_fallbacks() as fallbacks:
        # bench/nonlocal_block.py's programs (a float32 benchmark there; here x's dtype is the block's).
        run_fwd, run_fwd_bwd, temp, _ = block_bench._block_programs(pairwise, impl, x, 256)  # pylint: disable=W0212
        run_fwd(), run_fwd_bwd()  # Compiled and run once here, so that a refusal stays this path's alone.
      if fallbacks:
        rows.append(dict(base, implementation=impl, status='fell back', error=fallbacks[0][:400]))
        continue
      programs[f'{impl}/fwd'], programs[f'{impl}/fwd_bwd'] = run_fwd, run_fwd_bwd
      memory[impl] = (temp / MIB, _device_peak_mib())
    except Exception as e:  # pylint: disable=broad-except
      rows.append(dict(base, implementation=impl, status='failed', error=device_run.error_line(e)))
  times = common.time_interleaved(programs, repeats) if programs else {}
  for impl in impls:
    if impl in memory:
      rows.append(dict(base, implementation=impl, status='ok', fwd_ms=1e3 * times[f'{impl}/fwd'],
                       fwd_bwd_ms=1e3 * times[f'{impl}/fwd_bwd'], temp_mib=memory[impl][0],
                       device_peak_mib=memory[impl][1]))
  rows += [dict(base, implementation=i, status='refused', error=why) for i, why in refused.items()]
  measured = {r['implementation']: r['fwd_bwd_ms'] for r in rows if r['status'] == 'ok'}
  entry = attention_auto.make_entry(pairwise, jnp.dtype(dtype), batch, *attention_sizes(shape),
                                    measured) if measured else None
  return rows, entry


def profile_key(implementation, variant) -> str:
  """Where the payload keeps a profile: 'profile', with the variant and any attention path but 'auto' after it
  ('profile conv=folded,pool=slices,attention=lean')."""
  settings = device_plan.settings_label(variant, implementation)
  return 'profile' + (f' {settings}' if settings else '')


def profile_piece(key, dtype, implementation, batch, variant, steps, tiny, out_dir, kept=None):
  """A profiler trace of ``steps`` train steps (after a warm-up), summarised by ``bench.device_profile``; the trace
  is kept as ``<out_dir>/profile.xplane.pb``. The step is the one a train piece left in ``kept`` (a dict, as
  ``train_piece``'s ``keep``) if it did, else compiled here."""
  if kept:
    config, compiled, state, batch = (kept[k] for k in ('config', 'compiled', 'state', 'batch'))
  else:
    config, _, compiled, state, batch, _, _ = _compiled_step(key, dtype, implementation, batch, variant, tiny)
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  trace_dir = os.path.join(out_dir, 'trace')
  shutil.rmtree(trace_dir, ignore_errors=True)
  _, path = device_profile.trace_steps(compiled, state, batch, steps, trace_dir)
  suffix = profile_key(implementation, variant)[len('profile'):].strip().replace('=', '-').replace(',', '_')
  trace = os.path.join(out_dir, f"profile{'_' + suffix if suffix else ''}.xplane.pb")
  shutil.move(path, trace)
  shutil.rmtree(trace_dir, ignore_errors=True)
  return dict(device_profile.summarize(trace, steps), network=key, dtype=dtype, attention=implementation,
              batch=config.data.global_batch_size, variant=variant or '', trace=os.path.basename(trace),
              compiled_here=not kept)


def feed_piece(clips, frames, crop, repeats):
  """The training loop's host-to-device call (``parallel.shard_batch``) on one uint8 batch of ``clips`` clips of
  frames×crop²: the calling thread's wall and CPU time until the call returns, and the time until the batch is on
  the devices (medians of ``repeats``, after one more). The loop makes this call on the thread that takes the
  pipeline's batches, so its time caps the clips/s that thread can feed, as the pipeline's own share does."""
  mesh = parallel.make_mesh()
  batch = {'clips': np.random.default_rng(0).integers(0, 256, (clips, frames, crop, crop, 3), dtype=np.uint8),
           'view_side': np.full(clips, crop, np.int32), 'view_flip': np.zeros(clips, bool),
           'label': np.zeros(clips, np.int32)}
  call, cpu, ready = [], [], []
  for _ in range(repeats + 1):
    wall, thread = time.perf_counter(), time.thread_time()
    arrays = parallel.shard_batch(batch, mesh)
    call.append(time.perf_counter() - wall)
    cpu.append(time.thread_time() - thread)
    jax.block_until_ready(arrays)
    ready.append(time.perf_counter() - wall)
    del arrays
  median = lambda v: float(np.median(v[1:]))
  nbytes = sum(x.nbytes for x in batch.values())
  return dict(piece=device_plan.feed_name(clips, frames, crop), clips=clips, frames=frames, crop=crop,
              batch_mb=nbytes / 1e6, devices=mesh.size, call_ms=1e3 * median(call), call_cpu_ms=1e3 * median(cpu),
              ready_ms=1e3 * median(ready), call_clips_per_s=clips / median(call),
              gb_per_s=nbytes / median(ready) / 1e9)


def pipeline_piece(out_dir, seconds_left, tiny):
  """bench/input_pipeline.py --quick in a subprocess, or why it is skipped."""
  if tiny:
    return {'status': 'skipped', 'reason': 'not with --tiny (it takes minutes; python bench/input_pipeline.py)'}
  try:
    for name in ('av', 'tensorflow', 'tensorflow_datasets'):
      importlib.import_module(name)
  except ImportError as e:  # The GPU machines: JAX alone.
    return {'status': 'skipped', 'reason': f'its dependencies do not import here ({device_run.error_line(e)})'}
  if seconds_left < 60:
    return {'status': 'skipped', 'reason': 'too little of --budget_s left (it takes about 2 minutes)'}
  run = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'input_pipeline.py'), '--quick',
                        f'--out_dir={out_dir}'], capture_output=True, text=True, timeout=seconds_left, cwd=ROOT)
  if run.returncode:
    return {'status': 'failed', 'error': run.stderr.strip().splitlines()[-1][:400] if run.stderr.strip() else ''}
  return {'status': 'ok', 'results': os.path.join(out_dir, 'input_pipeline.md')}


def main(argv=None):
  """Parses the flags, runs every piece within the budget, writes the results and the 'auto' table."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--tiny', action='store_true', help='tiny shapes and steps: the whole run in seconds on a CPU')
  parser.add_argument('--out_dir', default=os.path.join(ROOT, 'bench', 'results'),
                      help='results go to <out_dir>/<device slug>/')
  parser.add_argument('--table', default=None, help="where to write the 'auto' table (default: the package's "
                      'attention_tables/<slug>.json; with --tiny <out_dir>/<slug>/attention_auto.json)')
  parser.add_argument('--repeats', type=int, default=None, help='timed runs of each block program (5; --tiny 1)')
  parser.add_argument('--budget_s', type=float, default=420.0, help='no piece starts after this many seconds')
  parser.add_argument('--resume', action='store_true', help='keep the pieces that an earlier run (its device.json '
                      'in the results folder, same device kind) finished, and run the rest: a second lease goes on '
                      'where the first stopped')
  parser.add_argument('--also_to', default='', help='also copy the files written into this folder (e.g. $OUT)')
  args = parser.parse_args(argv)
  sizes = device_plan.TINY if args.tiny else device_plan.FULL
  args.repeats = args.repeats or (1 if args.tiny else 5)
  slug = attention_auto.current_slug()
  run = device_run.Run(args, slug, device_plan.LABELS)
  table = args.table or (os.path.join(run.dir, 'attention_auto.json') if args.tiny else attention_auto.table_path(slug))
  run.table = table
  run.payload['table_path'] = os.path.relpath(table, ROOT) if table.startswith(ROOT) else table
  print(f'bench.device on {common.machine_line(run.payload["machine"])}; results in {run.dir}', flush=True)

  done = run.resume() if args.resume else {}
  if 'matmul' in done:
    print('matmul: kept from the previous run', flush=True)
  else:
    matmul = run.piece('matmul', matmul_piece, sizes['matmul'], sizes['copy_mib'], 3)
    run.payload['matmul'] = dict(matmul, status='ok') if matmul else run.payload['pieces']['matmul']
  train_rows = {}
  # A train step that a later profile traces is kept compiled, with its state and batch, until that profile: the
  # first H200 lease spent 11-38 s compiling each R50 step (19-38 s for C2D + 5 NL in bf16).
  traced = {device_plan.piece_name('train', *what) for kind, *what in sizes['plan'] if kind == 'profile'}
  kept_steps = {}
  for kind, *what in sizes['plan']:
    if kind in ('train', 'profile'):
      name = device_plan.piece_name(kind, *what)
      if name in done:
        if done[name] is not None:  # A kept train row (a kept profile is in the payload already).
          train_rows[name] = done[name]
          run.payload['train'] = list(train_rows.values())
        continue
      key, dtype, implementation, batch, variant = (*what, None, None)[:5]
      if kind == 'profile':
        row = run.piece(name, profile_piece, key, dtype, implementation, batch, variant, sizes['profile_steps'],
                        args.tiny, run.dir, kept_steps.pop(device_plan.piece_name('train', *what), None))
        run.payload[profile_key(implementation, variant)] = row or dict(run.payload['pieces'][name])
        continue
      row = run.piece(name, train_piece, key, dtype, implementation, batch, variant, sizes['train_steps'],
                      args.tiny, run.payload.get('matmul'), kept_steps.setdefault(name, {}) if name in traced else None)
      train_rows[name] = dict(row, status='ok', piece=name) if row else dict(
          run.payload['pieces'][name], network=key, dtype=dtype, attention=implementation, variant=variant or '',
          piece=name)
      run.payload['train'] = list(train_rows.values())
      run.save()
      continue
    if kind == 'feed':
      name = device_plan.feed_name(*what)
      if name not in done:
        row = run.piece(name, feed_piece, *what, args.repeats)
        run.payload['feed'] = run.payload.get('feed', []) + ([row] if row else [])
        run.save()
      continue
    dtype, pairwise = what
    for shape_name, shape, impls, refused in block_cases(sizes['block_shapes'], dtype, pairwise):
      name = f'block {shape_name} {dtype} {pairwise}'
      if name in done and not forget_block_case(run.payload, shape_name, shape, dtype, pairwise, impls + list(refused)):
        continue
      result = run.piece(name, block_piece, shape_name, shape, dtype, pairwise, impls, refused, sizes['block_batch'],
                         args.repeats)
      if result:
        run.payload['block'] += result[0]
        run.payload['auto_entries'] += [result[1]] if result[1] else []
        run.save()
  run.payload['pipeline'] = pipeline_piece(run.dir, run.left(), args.tiny)
  run.save()
  print(device_report.to_markdown(run.payload, device_plan.LABELS), flush=True)
  return run.payload


if __name__ == '__main__':
  main()
