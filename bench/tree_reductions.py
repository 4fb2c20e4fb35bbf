"""The train step's whole-tree reductions, one per leaf or a group of leaves at a time, on each backend.

    python -m bench.tree_reductions      # this CPU; also an H200 / a v5e-1 where JAX has the CUDA plugin / libtpu

Every step checks its new parameters, BatchNorm statistics and optimiser state for NaN/Inf and takes the
gradients' norm (``nonlocal_jax.training.tree_reductions``), with one reduction per leaf (the reference: what the
step did before, and still does on a CPU and a TPU) or ``GROUPED`` leaves concatenated into one reduction (what it
does on a GPU). For each: the kernels of the compiled step (the entry computation's fusions, copies, library calls
and other instructions) and XLA's bytes, for this CPU (R50 C2D + 5 NL, float32, 2 clips of 8×224²; also the step's
time, median of ``--repeats``, the two interleaved), and where the compiler is installed, compiled here for an
NVIDIA H200 (``bench.gpu_compile``'s target: bf16, 8 clips, folded convolutions, sliced pools) and a one-chip v5e
(``bench.tpu_compile``'s: bf16, 8 clips). Nothing but the CPU is timed. Writes
bench/results/tree_reductions.{json,md}.
"""

from __future__ import annotations

# pylint: disable=g-import-not-at-top,wrong-import-position
from bench import gpu_compile  # First: it sets the environment JAX starts with (CPU backend, no autotuning).

import argparse
import contextlib
import os
import sys

import jax

from bench import aot
from bench import common
from bench import device_plan
from bench import hlo_facts
from bench import tpu_compile
from nonlocal_jax.data import fake
from nonlocal_jax.training import parallel
from nonlocal_jax.training import tree_reductions
from nonlocal_jax.training.trainer import Trainer

_NOT_KERNELS = {'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast', 'after-all', 'partition-id',
                'replica-id', 'opt-barrier'}
GROUPED = tree_reductions.LEAVES_PER_REDUCTION['gpu']
SIZES = (1, GROUPED)


def label(size: int) -> str:
  """How a row names the formulation of ``size`` leaves per reduction."""
  return 'one reduction per leaf' if size == 1 else f'{size} leaves per reduction'


@contextlib.contextmanager
def leaves_per_reduction(size: int):
  """The train step traced within reduces ``size`` leaves at a time on every backend."""
  saved = dict(tree_reductions.LEAVES_PER_REDUCTION)
  tree_reductions.LEAVES_PER_REDUCTION.update(cpu=size, gpu=size, tpu=size)
  try:
    yield
  finally:
    tree_reductions.LEAVES_PER_REDUCTION.clear()
    tree_reductions.LEAVES_PER_REDUCTION.update(saved)


def kernels(compiled) -> dict:
  """{'kernels': n, 'fusions': n, 'copies': n} of the compiled module's entry computation."""
  computations, entry = hlo_facts.parse(compiled.as_text())
  ops = [i.opcode for i in computations[entry] if i.opcode not in _NOT_KERNELS]
  return {'kernels': len(ops), 'fusions': ops.count('fusion'), 'copies': ops.count('copy')}


def compiled_rows(target: str, mesh_fn, config, memory_bytes: int) -> list:
  """Each formulation's step compiled for ``target`` (its mesh from ``mesh_fn``, ``memory_bytes`` per device), or
  one row saying why not."""
  try:
    mesh = mesh_fn()
  except SystemExit as e:
    return [dict(target=target, skipped=str(e))]
  rows = []
  for size in SIZES:
    with leaves_per_reduction(size):
      compiled, _ = aot.compile_train_step(config, mesh, memory_bytes=memory_bytes)
    rows.append(dict(target=target, formulation=label(size), clips=config.data.global_batch_size,
                     dtype=config.model.dtype, xla_gb=aot.xla_cost(compiled).get('bytes accessed', 0) / 1e9,
                     **kernels(compiled)))
  return rows


def cpu_rows(batch: int, repeats: int) -> list:
  """Each formulation's step on this CPU: kernels, XLA's bytes and the median step time, interleaved."""
  config = device_plan.network_config('c2d_nl', 'float32', tiny=False, batch=batch)
  mesh = parallel.make_mesh()
  clips = fake.batch_fn(config.data, kind='video', num_classes=config.model.num_classes,
                        sharding=parallel.batch_sharded(mesh))(0, 0)
  states, steps, rows = {}, {}, {}
  for size in SIZES:
    name = label(size)
    trainer = Trainer(config, mesh)  # Its own: a jitted step is traced once, and the formulation is read then.
    with leaves_per_reduction(size):
      compiled = trainer.train_step.lower(trainer.init_state(), clips).compile()
    states[name] = trainer.init_state()
    steps[name] = compiled
    rows[name] = dict(target='cpu', formulation=name, clips=batch, dtype='float32',
                      xla_gb=aot.xla_cost(compiled).get('bytes accessed', 0) / 1e9, **kernels(compiled))

  def run(name):
    def one_step():
      states[name], metrics = steps[name](states[name], clips)
      jax.block_until_ready(metrics['loss'])
    return one_step

  times = common.time_interleaved({name: run(name) for name in steps}, repeats)
  for name, seconds in times.items():
    rows[name]['step_s'] = seconds
  return list(rows.values())


def to_markdown(payload: dict) -> str:
  """The rows as a markdown table, with how they were made."""
  table = []
  for r in payload['rows']:
    if 'skipped' in r:
      table.append([r['target'], f"skipped: {r['skipped']}"] + [''] * 6)
      continue
    step = f"{r['step_s']:.2f}" if 'step_s' in r else '-'
    table.append([r['target'], r['formulation'], f"{r['clips']} clips, {r['dtype']}", r['kernels'], r['fusions'],
                  r['copies'], f"{r['xla_gb']:.2f}", step])
  return '\n'.join([
      f"The train step of R50 C2D + 5 NL (8×224²) with the two formulations of its whole-tree reductions; "
      f"`python -m bench.tree_reductions`, {payload['machine']}, load {payload['load']} at start. The H200 and "
      "v5e rows are compiled here without the device (`bench.gpu_compile`: folded convolutions, sliced pools, "
      "BatchNorm as 'auto' picks it, no autotuning; `bench.tpu_compile`); only the CPU is timed.", '',
      common.markdown_table(['target', 'formulation', 'step', 'kernels', 'fusions', 'copies', 'XLA GB/step',
                             's/step (median)'], table)])


def main(argv=None) -> None:
  """Measures both formulations and writes the results."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', type=int, default=2, help='clips per CPU step')
  parser.add_argument('--repeats', type=int, default=5, help='timed CPU steps of each formulation')
  parser.add_argument('--out_dir', default=os.path.join(gpu_compile.ROOT, 'bench', 'results'))
  args = parser.parse_args(argv)
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  rows = (compiled_rows('nvidia-h200', lambda: gpu_compile.target_mesh('nvidia-h200'),
                        device_plan.network_config('c2d_nl', 'bfloat16', tiny=False, variant='conv=folded,pool=slices'),
                        gpu_compile.memory_bytes('nvidia-h200'))
          + compiled_rows('v5e-1', lambda: tpu_compile.target_mesh('v5e-1'), tpu_compile.network_config('c2d_nl', 1),
                          tpu_compile.memory_bytes('TPU v5 lite'))
          + cpu_rows(args.batch, args.repeats))
  payload = dict(machine=common.machine_line(common.machine_description()), load=load, rows=rows)
  common.write_results('tree_reductions', payload, to_markdown(payload), args.out_dir)


if __name__ == '__main__':
  main(sys.argv[1:])
