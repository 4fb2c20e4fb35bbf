"""Facts from the text of an optimised XLA:GPU HLO module (``compiled.as_text()``): what cuDNN is handed, and the
operations a step's profile blames for time.

- Convolutions: the cuDNN convolution custom calls, by rank and layout. ``dim_labels=b01f_o01i->b01f`` is a 2D
  convolution whose activations are channels-last (the feature dimension ``f`` last); ``bf012_...`` a 3D one
  channels-first. cuDNN converts a channels-first operand to channels-last around each call on Hopper (the
  ``nchwToNhwc`` kernels of the H200 profile), so channels-first convolutions cost transposes that the HLO does not
  show.
- Transposes anywhere in the module (inside fusions too), split into those of the parameters and optimiser state
  (a tensor with as many elements as an entry parameter, or as one temporal tap of one: kernels re-laid-out for
  cuDNN) and the rest (activations), with the bytes the latter write. A transpose of the input batch itself
  would count as state: the rule knows sizes, not names.
- Loops (``while``: the chunked attention's), whose bodies XLA's cost analysis counts once.
- Max pools' backward passes: ``select-and-scatter`` and ``scatter`` ops (this XLA rewrites the former into the
  latter), and ``reduce-window`` ops.
- Kernel-level fusions (each one GPU kernel launch; those of a loop's body are not counted) and the other custom
  calls (cuBLAS, cuDNN attention).
- Collectives (all-reduce, all-gather, ...: what a sharded step exchanges between devices) and their bytes.
"""

from __future__ import annotations

import collections
import math
import re
from typing import Dict, List, NamedTuple, Tuple

BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
         's64': 8, 'u64': 8, 'f64': 8}
_HEADER = re.compile(r'^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\((.*)$')
_ARRAY = re.compile(r'\b([a-z]+[0-9]*)\[([0-9,]*)\]')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_DIM_LABELS = re.compile(r'dim_labels=(\w+)_\w+->\w+')
COLLECTIVES = ('all-reduce', 'all-reduce-start', 'reduce-scatter', 'all-gather', 'all-gather-start', 'all-to-all',
               'collective-permute', 'collective-permute-start')


class Instruction(NamedTuple):
  """One HLO instruction: its name, result shape text, opcode and whole line."""
  name: str
  shape: str
  opcode: str
  line: str


def parse(text: str) -> Tuple[Dict[str, List[Instruction]], str]:
  """({computation name: its instructions}, the entry computation's name) of an HLO module's text."""
  computations, entry, current = collections.OrderedDict(), None, None
  for line in text.splitlines():
    if current is None:
      header = _HEADER.match(line)
      if header:
        current = header.group(2)
        computations[current] = []
        entry = current if header.group(1) else entry
      continue
    if line.strip() == '}':
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if match:
      computations[current].append(Instruction(match.group(1), match.group(2), match.group(3), line))
  return computations, entry


def arrays(shape: str) -> List[Tuple[str, Tuple[int, ...]]]:
  """[(dtype, dims)] of the arrays in a shape's text (several for a tuple)."""
  return [(dtype, tuple(int(d) for d in dims.split(',') if d)) for dtype, dims in _ARRAY.findall(shape)
          if dtype in BYTES]


def nbytes(shape: str) -> int:
  """Bytes of the first array of a shape's text (a custom call's result before its scratch buffer)."""
  found = arrays(shape)
  return math.prod(found[0][1]) * BYTES[found[0][0]] if found else 0


def conv_layout(line: str) -> str:
  """'2D channels-last', '3D channels-first', ... of a cuDNN convolution's line (from its input's dim labels)."""
  labels = _DIM_LABELS.search(line)
  if not labels:
    return 'unknown'
  first = labels.group(1)
  order = 'channels-last' if first.endswith('f') else 'channels-first' if first[1:2] == 'f' else 'other'
  return f'{len(first) - 2}D {order}'


def kernel_level(computations: Dict[str, List[Instruction]]) -> List[Instruction]:
  """The instructions of the computations that no other instruction calls or applies (the entry's, in practice):
  each fusion or custom call among them is one kernel launch. A loop's body and condition are applied by the
  loop, so what runs inside them is left out."""
  called = {m for instructions in computations.values() for i in instructions for m in _CALLS.findall(i.line)}
  applied = {m for instructions in computations.values() for i in instructions
             for m in re.findall(r'(?:to_apply|select|scatter|condition|body)=%?([\w.\-]+)', i.line)}
  return [i for name, instructions in computations.items() if name not in called | applied for i in instructions]


def custom_call_target(line: str) -> str:
  """'__cudnn$convForward', '__cublas$lt$matmul', ...: what a custom call's line calls."""
  return _TARGET.search(line).group(1)


def facts(text: str) -> dict:
  """The facts listed in the module docstring, of one optimised HLO module."""
  computations, entry = parse(text)
  kernels = kernel_level(computations)
  everywhere = [i for instructions in computations.values() for i in instructions]

  convs, custom = collections.Counter(), collections.Counter()
  for i in kernels:
    if i.opcode == 'custom-call':
      target = custom_call_target(i.line)
      if target.startswith('__cudnn$conv'):
        convs[conv_layout(i.line)] += 1
      else:
        custom[target] += 1

  sizes = {math.prod(dims) for i in computations.get(entry, []) if i.opcode == 'parameter'
           for _, dims in arrays(i.shape)}

  def of_state(shape: str) -> bool:
    found = arrays(shape)
    n = math.prod(found[0][1]) if found else 0
    # A kernel, or one temporal tap of a 3D kernel (then it has a unit dimension and a known multiple).
    return n in sizes or (1 in found[0][1] and any(n * k in sizes for k in range(2, 8))) if found else False

  transposes = [i for i in everywhere if i.opcode == 'transpose']
  activation = [i for i in transposes if not of_state(i.shape)]
  opcodes = collections.Counter(i.opcode for i in everywhere)
  return {
      'convolutions': sum(convs.values()),
      'convolution_layouts': dict(sorted(convs.items())),
      'fusions': sum(i.opcode == 'fusion' for i in kernels),
      'other_custom_calls': dict(sorted(custom.items())),
      'activation_transposes': len(activation),
      'activation_transpose_gb': sum(nbytes(i.shape) for i in activation) / 1e9,
      'state_transposes': len(transposes) - len(activation),
      'scatters': opcodes['scatter'] + opcodes['select-and-scatter'],
      'max_pool_scatters': sum(i.opcode in ('scatter', 'select-and-scatter') and 'select_and_scatter' in i.line
                               for i in everywhere),
      'reduce_windows': opcodes['reduce-window'],
      'loops': opcodes['while'],
      'collectives': {op: opcodes[op] for op in COLLECTIVES if opcodes[op]},
      'collective_mib': sum(sum(math.prod(d) * BYTES[t] for t, d in arrays(i.shape)) for i in everywhere
                            if i.opcode in COLLECTIVES) / 2**20,
  }
