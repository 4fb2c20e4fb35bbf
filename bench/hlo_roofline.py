"""The least time a compiled XLA:GPU step can take at given matmul and memory rates: ``floor``.

A step's kernels run one after another. XLA's own fusions (normalisation, ReLU, residual adds, pools, the optimiser)
are bound by memory: their bytes (XLA's cost analysis) at the copy rate. The library calls that cost analysis
leaves out, cuDNN's convolutions and cuBLAS's matrix products, each take at least the longer of their bytes at the
copy rate and their flops at the matmul rate; many of R50's convolutions (1×1, 64 to 256 channels) move too many
bytes per multiply-add to reach the matmul rate. ``library_calls`` reads each call's operands, result and flops
from the HLO text; ``floor`` adds it all up.

What this floor assumes: every byte goes to and from device memory (an H200's 50 MiB L2 can keep some of res4's
and res5's tensors between kernels, which would lower it), no kernel overlaps another, and every kernel runs at
the measured peak rates. It is a bound on this program, not on the network: another compiler or hand-written
kernels that fuse BatchNorm into the convolutions would move fewer bytes.
"""

from __future__ import annotations

import json
import math
import re
from typing import List, NamedTuple

from bench import hlo_facts

_OPERANDS = re.compile(r'custom-call\(([^)]*)\)')
_NAME = re.compile(r'%([\w.\-]+)')
_CONTRACTING = re.compile(r'"lhs_contracting_dimensions":\[([^\]]*)\]')
_CONV_LABELS = re.compile(r'dim_labels=(\w+)_(\w+)->(\w+)')


class Call(NamedTuple):
  """One cuDNN convolution or cuBLAS product: its target, the bytes of its operands and result, its flops."""
  target: str
  bytes: int
  flops: int


def _dims(shape: str):
  return hlo_facts.arrays(shape)[0][1]


def _conv_flops(target: str, line: str, operand_shapes, result_shape) -> int:
  """2 × multiply-adds of a convolution: output elements × kernel elements / output features. The forward output
  is a forward call's result, and dy in a backward call: the first operand of a backward-input call (dy, kernel),
  the second of a backward-filter call (x, dy), whose result is the kernel's gradient."""
  kernel_labels = _CONV_LABELS.search(line).group(2)
  if 'BackwardFilter' in target:
    kernel, output = _dims(result_shape), _dims(operand_shapes[1])
  elif 'BackwardInput' in target:
    kernel, output = _dims(operand_shapes[1]), _dims(operand_shapes[0])
  else:
    kernel, output = _dims(operand_shapes[1]), _dims(result_shape)
  return 2 * math.prod(output) * math.prod(kernel) // kernel[kernel_labels.index('o')]


def _gemm_flops(line: str, operand_shapes, result_shape) -> int:
  """2 × result elements × the contracted size of the left operand (from the call's dot dimension numbers)."""
  contracting = [int(d) for d in json.loads('[' + _CONTRACTING.search(line).group(1) + ']')]
  lhs = _dims(operand_shapes[0])
  return 2 * math.prod(_dims(result_shape)) * math.prod(lhs[d] for d in contracting)


def library_calls(text: str) -> List[Call]:
  """The cuDNN convolutions and cuBLAS products of an optimised HLO module's kernel-level computations (those of a
  loop's body are not counted, as in ``hlo_facts.facts``)."""
  computations, _ = hlo_facts.parse(text)
  shapes = {i.name: i.shape for instructions in computations.values() for i in instructions}
  calls = []
  for i in hlo_facts.kernel_level(computations):
    if i.opcode != 'custom-call':
      continue
    target = hlo_facts.custom_call_target(i.line)
    is_conv, is_gemm = target.startswith('__cudnn$conv'), target.startswith('__cublas$')
    if not (is_conv or is_gemm):
      continue
    operand_shapes = [shapes[n] for n in _NAME.findall(_OPERANDS.search(i.line).group(1))]
    moved = sum(hlo_facts.nbytes(s) for s in operand_shapes) + hlo_facts.nbytes(i.shape)
    flops = (_conv_flops(target, i.line, operand_shapes, i.shape) if is_conv
             else _gemm_flops(i.line, operand_shapes, i.shape))
    calls.append(Call(target, moved, flops))
  return calls


def floor(xla_bytes: float, calls: List[Call], tflops: float, gb_per_s: float) -> dict:
  """The step's least time in ms at ``tflops`` (matmul) and ``gb_per_s`` (copy): XLA's fusions' bytes at the
  copy rate plus each library call at the slower of its two bounds; and the library calls' totals."""
  bandwidth, peak = gb_per_s * 1e9, tflops * 1e12
  library_s = sum(max(c.bytes / bandwidth, c.flops / peak) for c in calls)
  return {'floor_ms': 1e3 * (xla_bytes / bandwidth + library_s), 'library_ms': 1e3 * library_s,
          'library_gb': sum(c.bytes for c in calls) / 1e9, 'library_tflop': sum(c.flops for c in calls) / 1e12,
          'memory_bound_calls': sum(c.bytes / bandwidth > c.flops / peak for c in calls), 'library_calls': len(calls)}
