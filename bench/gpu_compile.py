"""What XLA's GPU compiler makes of the bf16 train step, on a machine without a GPU: ``python -m bench.gpu_compile``.

JAX compiles ahead of time for a GPU it does not have (a topology described by a ``GpuTargetConfig``; here an
NVIDIA H200, sm_90). For each network formulation below, the train step (``Trainer.train_step`` at the device
benchmark's 8 clips × 8×224², bf16) is compiled for that GPU and its optimised HLO read (``bench.hlo_facts``):
how many cuDNN convolutions, in which layout; the transposes XLA adds; the max pools' scatters; the kernel-level
fusions; the bytes XLA's own fusions read and write (XLA's cost analysis of the GPU module; cuDNN's and cuBLAS's
calls are not counted, as in ``bench.device``'s traffic column) and the step's temporary memory; and, where
``bench.device`` has measured that GPU's matmul and copy rates, the least time the program could take at them
(``bench.hlo_roofline``). Nothing is timed: this says what a formulation changes in the program, and
``bash bench/device.sh`` on a GPU says what it costs.

Limits: no autotuning (it needs the device; the convolution algorithms and some fusion decisions differ on one),
Triton GEMM fusion off (without autotuning it cannot pick tiles), and the blocks' attention is chosen by the
H200's table except cuDNN's (JAX checks the local GPU when it traces it; the next path in the table's ranking
is taken). The JAX here must have its CUDA plugin, in an environment of its own (several GB), for example::

  python -m venv .gpu-venv && .gpu-venv/bin/pip install -e . \
      "jax-cuda13-plugin[with-cuda]==$(python -c 'import jaxlib; print(jaxlib.__version__)')" \
      "jax-cuda13-pjrt==$(python -c 'import jaxlib; print(jaxlib.__version__)')"
  .gpu-venv/bin/python -m bench.gpu_compile

Writes ``bench/results/<target>/compiled.{json,md}``.
"""

from __future__ import annotations

import os

# Before JAX starts: the CPU stays the default backend (no CUDA client is made, so no driver is needed), the
# plugin skips its check of the driver's libraries, and XLA neither autotunes nor asks Triton for GEMM tiles.
os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''), '--xla_gpu_autotune_level=0',
                                    '--xla_gpu_enable_triton_gemm=false']).strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import json
import re
import sys

import jax
from jax.experimental import topologies

from bench import aot
from bench import common
from bench import device_plan
from bench import hlo_facts
from bench import hlo_roofline
from nonlocal_jax.models import build_model
from nonlocal_jax.models.summary import analyse
from nonlocal_jax.training import checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# An H200 as XLA's GPU compiler sees it: compute capability 9.0 (what picks the convolutions' layouts), 132 SMs,
# 4.8 TB/s, about 139 GiB, and the cuDNN / CUDA versions the compiler may assume.
TARGETS = {'nvidia-h200': """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 4800000000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 150110011392 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 28 }
runtime_version { major: 13 minor: 0 }
device_description_str: "NVIDIA H200"
"""}
# (network, variant of bench.device_plan[, the blocks' attention, else 'auto'[, clips a step, else 8]]): today's
# defaults on the H200, each change alone and together, the blocks' attention 'lean' (what it saves against the path
# the table picks) at 8, 32 and 64 clips (what a larger batch amortises: the optimiser, the weights' casts and
# checks), the two with BatchNorm differentiated automatically (what the written-out backward pass saves) and frozen
# (what BN's statistics cost), and XLA's channels-last 3D convolutions; for I3D (whose 3×1×1 kernels fold into 3×1
# convolutions) the same ends.
PLAN = (('c2d_nl', 'conv=native,pool=window'), ('c2d_nl', 'conv=folded,pool=window'),
        ('c2d_nl', 'conv=native,pool=slices'), ('c2d_nl', 'conv=folded,pool=slices'),
        ('c2d_nl', 'conv=folded,pool=slices', 'lean'), ('c2d_nl', 'conv=folded,pool=slices', 'lean', 32),
        ('c2d_nl', 'conv=folded,pool=slices', 'lean', 64),
        ('c2d_nl', 'conv=folded,pool=slices,bn=flax'), ('c2d_nl', 'conv=folded,pool=slices,norm=affine'),
        ('c2d_nl', 'conv=native,pool=window,xla=nhwc'), ('c2d_nl', 'conv=native,pool=slices,xla=nhwc'),
        ('i3d_nl', 'conv=native,pool=window'), ('i3d_nl', 'conv=folded,pool=slices'),
        ('i3d_nl', 'conv=native,pool=slices,xla=nhwc'))
# What a PLAN row or an --only item leaves out: the blocks' attention and the clips a step.
_DEFAULTS = ('auto', 8)
# JAX's GPU client lets a process allocate 75 % of the GPU's memory unless told otherwise
# (XLA_PYTHON_CLIENT_MEM_FRACTION): the ``bytes_limit`` that 'auto' would read on the GPU itself.
JAX_MEMORY_FRACTION = 0.75
INSTALL = ('install the CUDA plugin of this jaxlib in its own environment (see `python -m bench.gpu_compile '
           '--help`), then rerun')


def device_name(target: str) -> str:
  """'NVIDIA H200, sm_90': the GPU a target describes."""
  config = TARGETS[target]
  name = re.search(r'device_description_str: "([^"]+)"', config).group(1)
  major, minor = re.search(r'cuda_compute_capability \{ major: (\d+) minor: (\d+)', config).groups()
  return f'{name}, sm_{major}{minor}'


def memory_bytes(target: str) -> int:
  """What JAX would let a program allocate on the GPU ``target`` (its ``bytes_limit`` there)."""
  return int(int(re.search(r'device_memory_size: (\d+)', TARGETS[target]).group(1)) * JAX_MEMORY_FRACTION)


def target_mesh(target: str):
  """A one-device mesh (axis 'batch', as ``parallel.make_mesh``) on the GPU ``target``, with no GPU here."""
  try:
    topology = topologies.get_topology_desc(platform='cuda', target_config=TARGETS[target], topology='1x1x1')
  except Exception as e:  # pylint: disable=broad-except
    raise SystemExit(f'JAX cannot describe a CUDA GPU here ({type(e).__name__}: {str(e)[:200]}): {INSTALL}.')
  return topologies.make_mesh(topology, (1,), ('batch',))


def measured_rates(target: str):
  """{'tflops': bf16 matmul TFLOP/s, 'gb_per_s': copy rate} that ``bench.device`` measured on the GPU ``target``
  (its committed device.json), or None where it has not run there."""
  path = os.path.join(ROOT, 'bench', 'results', target, 'device.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    matmul = json.load(f).get('matmul') or {}
  return ({'tflops': matmul['bfloat16_tflops'], 'gb_per_s': matmul['copy_gb_per_s']}
          if matmul.get('status') == 'ok' else None)


def compile_piece(network: str, variant: str, mesh, target: str, rates=None, attention: str = 'auto',
                  batch: int = 8) -> dict:
  """The facts of one formulation's compiled train step of ``batch`` clips for the GPU ``target`` (its ``mesh``),
  its blocks' attention computed by ``attention``, with its floor at the measured ``rates`` (``hlo_roofline``)
  when given."""
  config = device_plan.network_config(network, 'bfloat16', False, attention, batch, variant=variant)
  compiled, seconds = aot.compile_train_step(config, mesh, device_plan.compiler_options(variant), memory_bytes(target))
  cost, d, text = aot.xla_cost(compiled), config.data, compiled.as_text()
  xla_bytes = cost.get('bytes accessed')
  piece = dict(network=network, variant=variant, attention=attention, batch=batch, compile_s=seconds,
               **hlo_facts.facts(text),
               xla_gb=xla_bytes / 1e9 if xla_bytes else None, temp_gib=aot.memory_gib(compiled).get('temp_gib'),
               input=f'{d.global_batch_size}×{d.num_frames}×{d.crop_size}²')
  if rates and xla_bytes:
    # The count of a step's work: 3 × the forward multiply-adds of the model summary, 2 flops each.
    macs = analyse(build_model(config.model), (1, d.num_frames, d.crop_size, d.crop_size, 3)).macs
    piece['train_tflop'] = 2 * 3 * macs * d.global_batch_size / 1e12
    piece.update(hlo_roofline.floor(xla_bytes, hlo_roofline.library_calls(text), **rates))
    piece['max_of_matmul'] = piece['train_tflop'] / (piece['floor_ms'] / 1e3 * rates['tflops'])
  return piece


def to_markdown(payload: dict) -> str:
  """The pieces as a markdown table with how they were made."""
  labels = {key: label for key, label, *_ in device_plan.NETWORKS}
  rows = []
  for p in payload['pieces']:
    variant = (device_plan.settings_label(p['variant'], p.get('attention', 'auto'))
               + ('' if p.get('batch', 8) == 8 else f", {p['batch']} clips"))
    if 'error' in p:
      rows.append([labels[p['network']], variant, f"failed: {p['error']}"] + [''] * 7)
      continue
    layouts = ', '.join(f'{n} {k}' for k, n in p['convolution_layouts'].items())
    gb = '-' if p['xla_gb'] is None else f"{p['xla_gb']:.2f}"
    floor = (f"{p['floor_ms']:.2f} ms ({p['library_gb']:.1f} GB, {p['memory_bound_calls']} of "
             f"{p['library_calls']} bound by bytes), {100 * p['max_of_matmul']:.1f} %" if 'floor_ms' in p else '-')
    rows.append([labels[p['network']], variant, f"{p['convolutions']}: {layouts}",
                 f"{p['activation_transposes']} ({p['activation_transpose_gb']:.2f} GB)",
                 f"{p['max_pool_scatters']} / {p['reduce_windows']}", p['fusions'], gb, floor,
                 f"{p['temp_gib']:.2f}", f"{p['compile_s']:.0f}"])
  table = common.markdown_table(['network', 'variant', 'cuDNN convolutions: layout', 'activation transposes',
                                 'max-pool scatters / reduce-windows', 'fusions', 'XLA GB/step',
                                 'floor (library calls), at most of bf16 matmul', 'temp GiB', 'compile s'], rows)
  rates = payload.get('rates')
  floor_note = '' if not rates else (
      f" Floor: the step's least time at the rates `bench.device` measured on this GPU ({rates['tflops']:.1f} TFLOP/s "
      f"bf16 matmul, {rates['gb_per_s']:.0f} GB/s copy): XLA's bytes at the copy rate plus each cuDNN and cuBLAS "
      "call at the slower of its bytes and its flops (`bench/hlo_roofline.py`: every byte to and from device "
      "memory, no overlap); in brackets the calls' bytes and how many are bound by them. At most: the issue's count "
      "of the step's work (3 × the summary's forward multiply-adds) over that floor, as a fraction of the matmul "
      "rate.")
  return '\n'.join([
      f"Compiled by `python -m bench.gpu_compile` for an {device_name(payload['target'])} (no GPU here: "
      f"{payload['machine']}, jax {payload['jax']}, {payload['date']}), bf16 train step at "
      f"{payload['pieces'][0].get('input', '')} clips (where the variant names no other batch), no autotuning, "
      "Triton GEMM off, attention by the H200's table without cuDNN's (where the variant names no other path).",
      '', table, '',
      'Activation transposes: XLA transposes of tensors that are not parameters or optimiser state (those it '
      're-lays-out every step are left out); channels-first convolutions also cost cuDNN the transposes inside '
      'each call, which no HLO shows. XLA GB/step: the bytes XLA\'s own fusions read and write (cuDNN and cuBLAS '
      'calls not counted; a loop\'s body, such as the chunked attention\'s, counted once: '
      + _loops_line(payload['pieces']) + ').' + floor_note])


def _loops_line(pieces) -> str:
  """Which pieces have loops, whose bodies the XLA GB/step column counts once."""
  looped = [f"{p['network']} {p['variant']} ({p['loops']})" for p in pieces if p.get('loops')]
  return 'loops in ' + ', '.join(looped) if looped else 'none of these steps has one'


def main(argv=None) -> None:
  """Compiles every piece of ``PLAN`` (or those named) and writes the results."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument('--target', default='nvidia-h200', choices=sorted(TARGETS), help='the GPU to compile for')
  parser.add_argument('--only', default='', help="pieces 'network:variant[:attention[:clips]]' separated by ';' "
                      '(default: the plan)')
  parser.add_argument('--out_dir', default=None, help='default: bench/results/<target>')
  args = parser.parse_args(argv)
  networks = [n[0] for n in device_plan.NETWORKS]
  plan = []
  for item in [tuple(p.split(':', 3)) for p in args.only.split(';') if p] or PLAN:
    network, variant, attention, clips = item + _DEFAULTS[len(item) - 2:] if 2 <= len(item) <= 4 else ('',) * 4
    if network not in networks or not str(clips).isdigit():
      raise SystemExit(f"--only: {':'.join(map(str, item))!r} is not 'network:variant[:attention[:clips]]' with a "
                       f'network of {networks} and a whole number of clips.')
    clips = int(clips)
    plan.append((network, variant, attention, clips))
    try:  # The variant's settings, the attention and the model values they name, before anything compiles.
      config = device_plan.network_config(network, 'bfloat16', False, attention, clips, variant=variant)
      checks.check_config(config)
      build_model(config.model)
    except ValueError as e:
      raise SystemExit(f'--only: {e}') from None
  mesh, rates = target_mesh(args.target), measured_rates(args.target)
  machine = common.machine_description()
  pieces = aot.compile_pieces(
      [dict(network=n, variant=v, attention=a, batch=b) for n, v, a, b in plan],
      lambda network, variant, attention, batch: compile_piece(network, variant, mesh, args.target, rates, attention,
                                                               batch))
  payload = dict(target=args.target, machine=machine['cpu'], jax=jax.__version__, date=machine['date'],
                 pieces=pieces, rates=rates)
  common.write_results('compiled', payload, to_markdown(payload),
                       args.out_dir or os.path.join(ROOT, 'bench', 'results', args.target))


if __name__ == '__main__':
  main(sys.argv[1:])
