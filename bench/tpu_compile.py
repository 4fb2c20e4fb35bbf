"""Does the train step fit a Cloud TPU, checked on a machine without one: ``python -m bench.tpu_compile``.

JAX compiles ahead of time for a TPU topology it does not have (``jax.experimental.topologies`` with libtpu
installed): the step, sharded over the topology's chips as ``main.py`` shards it (mesh axis 'batch'), is compiled
for a v5e-8 and a v5e-1 (Colab's) slice, a v4-8 (four megacore chips) and a v2-8 (Colab's older TPU: eight
cores of 8 GiB), and the compiled program read: each chip's (core's) memory against its HBM, XLA's flop and byte
counts of one step, and the collectives that reduce the gradients. The models' 'auto' choices are those of a
TPU (``attention_auto.compiling_for``). Nothing is timed.

Networks: R50 C2D + 5 NL in bf16 at 8 clips of 8×224² per chip (``bench.device``'s network), and the Kinetics
recipe (``configs/kinetics_nl.py``: float32, 32-frame clips, 64 a step) on fake data, with gradient accumulation
where a slice has fewer than 8 chips, so that each chip's micro-batch stays 8 clips.

libtpu must match the installed jax (``pip install "jax[tpu]==<jax version>"``, an environment of its own is
simplest); ``JAX_PLATFORMS=cpu`` keeps JAX from looking for a TPU. Writes ``bench/results/tpu/compiled.{json,md}``.
"""

from __future__ import annotations

import os

os.environ['JAX_PLATFORMS'] = 'cpu'  # Before JAX starts: no TPU client is made on this host.

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import importlib.metadata
import importlib.util
import sys

import jax
from jax.experimental import topologies

from bench import aot
from bench import common
from bench import device_plan
from bench import hlo_facts
from nonlocal_jax import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Name -> (libtpu's topology name, its options): one v5e chip needs its own host bounds; a v4 chip is two cores
# that libtpu describes as two devices unless they are joined (megacore, as Cloud TPU v4 runs them).
TARGETS = {'v5e-8': ('v5e:2x4', {}), 'v5e-1': ('v5e:1x1', {'chips_per_host_bounds': (1, 1, 1)}),
           'v4-8': ('v4:2x2x1', {'chip_config_name': 'megacore'}), 'v2-8': ('v2:2x2', {})}
# HBM per device: a v2 chip's 16 GiB are two cores' 8 (JAX sees the cores).
HBM_GIB = {'TPU v5 lite': 16, 'TPU v4': 32, 'TPU v2': 8}
CLIPS_PER_CHIP = 8
NETWORKS = {'c2d_nl': 'R50 C2D + 5 NL, bf16, 8×224²', 'kinetics': 'configs/kinetics_nl.py (float32, 32×224²)',
            'c2d_nl_fused_bn': 'R50 C2D + 5 NL, bf16, 8×224², bn_implementation=fused'}
DEFAULT_NETWORKS = ('c2d_nl', 'kinetics')  # The fused BatchNorm's row is asked for by name (README, On one H200).


def memory_bytes(device_kind: str) -> int:
  """The HBM of one device of ``device_kind`` (what JAX may allocate there), in bytes."""
  return HBM_GIB[device_kind] * 2**30


def target_mesh(target: str):
  """A 1-D mesh (axis 'batch') over the chips of the TPU slice ``target``, described without one."""
  name, options = TARGETS[target]
  try:
    topology = topologies.get_topology_desc(topology_name=name, platform='tpu', **options)
  except Exception as e:  # pylint: disable=broad-except
    raise SystemExit(f'JAX cannot describe a TPU here ({type(e).__name__}: {str(e)[:200]}): install the libtpu of '
                     f'this jax (pip install "jax[tpu]=={jax.__version__}"), then rerun.')
  return topologies.make_mesh(topology, (len(topology.devices),), ('batch',))


def network_config(network: str, chips: int):
  """The config of ``network`` on ``chips`` chips: 8 clips a chip, accumulated where the recipe's batch needs it."""
  if network.startswith('c2d_nl'):
    config = device_plan.network_config('c2d_nl', 'bfloat16', tiny=False, batch=CLIPS_PER_CHIP * chips)
    config.model.bn_implementation = 'fused' if network == 'c2d_nl_fused_bn' else 'auto'
    return config
  config = config_files.load_module(os.path.join(ROOT, 'configs', 'kinetics_nl.py')).get_config(None)
  config.data.name = 'fake'
  config.train.accumulation_steps = max(1, config.data.global_batch_size // (CLIPS_PER_CHIP * chips))
  return config


def compile_piece(target: str, network: str, mesh) -> dict:
  """The facts of one network's compiled train step on the slice ``target`` (its ``mesh``)."""
  chips, kind = mesh.devices.size, mesh.devices.flat[0].device_kind
  config = network_config(network, chips)
  compiled, seconds = aot.compile_train_step(config, mesh, memory_bytes=memory_bytes(kind))
  cost, facts, d = aot.xla_cost(compiled), hlo_facts.facts(compiled.as_text()), config.data
  return dict(target=target, network=network, chips=chips, device_kind=kind, hbm_gib=HBM_GIB.get(kind),
              clips_per_chip=d.global_batch_size // chips, accumulation=config.train.accumulation_steps,
              dtype=config.model.dtype, input=f'{d.num_frames}×{d.crop_size}²', compile_s=seconds,
              tflop=cost['flops'] / 1e12 if cost.get('flops') else None,
              gb=cost['bytes accessed'] / 1e9 if cost.get('bytes accessed') else None,
              collectives=facts['collectives'], collective_mib=facts['collective_mib'], **aot.memory_gib(compiled))


def to_markdown(payload: dict) -> str:
  """The pieces as a markdown table with how they were made."""
  rows = []
  for p in payload['pieces']:
    if 'error' in p:
      rows.append([p['target'], NETWORKS[p['network']], f"failed: {p['error']}"] + [''] * 5)
      continue
    micro = p['clips_per_chip'] // p['accumulation']
    clips = f"{p['clips_per_chip']}" + (f" ({p['accumulation']} × {micro})" if p['accumulation'] > 1 else '')
    hbm = f" of {p['hbm_gib']}" if p['hbm_gib'] else ''
    exchanged = ', '.join(f'{n} {op}' for op, n in p['collectives'].items()) or 'none'
    flops = '-' if p['tflop'] is None else f"{p['tflop'] * p['accumulation']:.2f} / {p['gb'] * p['accumulation']:.1f}"
    rows.append([f"{p['target']} ({p['device_kind']})", NETWORKS[p['network']], clips,
                 f"{p['total_gib']:.2f}{hbm} (temp {p['temp_gib']:.2f})", flops,
                 f"{exchanged}: {p['collective_mib']:.0f} MiB", f"{p['compile_s']:.0f}"])
  table = common.markdown_table(['slice', 'network', 'clips per chip (steps × micro-batch)',
                                 'GiB per chip: total (temp)', 'TFLOP / GB per step and chip', 'collectives',
                                 'compile s'], rows)
  return '\n'.join([
      f"Compiled by `python -m bench.tpu_compile` without a TPU ({payload['machine']}, jax {payload['jax']}, "
      f"libtpu {payload['libtpu']}, {payload['date']}).", '', table, '',
      'Total: arguments + outputs + temporaries + code, less the donated buffers the outputs reuse (the runtime '
      'reserves some HBM beyond it). TFLOP / GB: XLA\'s counts for one optimiser step (a micro-batch\'s times the '
      'accumulation steps).'])


def main(argv=None) -> None:
  """Compiles every network on every slice (or those named) and writes the results."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument('--targets', default=','.join(TARGETS), help=f'slices among {tuple(TARGETS)}')
  parser.add_argument('--networks', default=','.join(DEFAULT_NETWORKS), help=f'among {tuple(NETWORKS)}')
  parser.add_argument('--out_dir', default=os.path.join(ROOT, 'bench', 'results', 'tpu'))
  args = parser.parse_args(argv)
  targets, networks = args.targets.split(','), args.networks.split(',')
  for given, known, flag in ((targets, TARGETS, '--targets'), (networks, NETWORKS, '--networks')):
    unknown = [g for g in given if g not in known]
    if unknown:
      raise SystemExit(f'{flag}: {unknown} unknown; use some of {tuple(known)}.')
  machine = common.machine_description()
  meshes = {target: target_mesh(target) for target in targets}  # A slice JAX cannot describe stops here.
  pieces = aot.compile_pieces([dict(target=t, network=n) for t in targets for n in networks],
                              lambda target, network: compile_piece(target, network, meshes[target]))
  payload = dict(machine=machine['cpu'], jax=jax.__version__, date=machine['date'], pieces=pieces,
                 libtpu=importlib.metadata.version('libtpu') if importlib.util.find_spec('libtpu') else None)
  common.write_results('compiled', payload, to_markdown(payload), args.out_dir)


if __name__ == '__main__':
  main(sys.argv[1:])
