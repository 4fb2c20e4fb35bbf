"""What ``implementation='auto'`` knows about the device: the measured table of the fastest exact path, and which
paths the backend accepts.

Tables are written by the device benchmark (``python -m bench.device`` on the device) and committed in this
package: ``nonlocal_jax/layers/attention_tables/<device slug>.json`` (the slug of ``device_kind``, e.g.
'NVIDIA H200' -> ``nvidia-h200.json``), found beside this file, so an installed package carries them. Each entry
is one measured case (pairwise function, compute dtype, groups × queries × keys, C') with the implementations
ranked by their forward+backward time. A device with no table keeps the size rule of ``attention``. The same
file may name the network formulations that were fastest there (``formulations``: per kind of network, 'c2d' or
'i3d', the convolutions' and the max pools' implementation, from the benchmark's bf16 R50 C2D / I3D + 5 NL train
steps), which the video models' 'auto' takes (``measured_formulation``).

cuDNN's fused attention (``jax.nn.dot_product_attention(implementation='cudnn')``) runs only on CUDA GPUs, in
bfloat16 or float16, with one head size (the padded max of C'q and C'v) of at most 256 and a multiple of 8:
``cudnn_refusal`` says why a case is refused, before anything is traced.

"The device" is the one jit compiles for: the default device, or, inside ``compiling_for(device)``, a device of
another machine that a program is compiled for ahead of time (a TPU or GPU topology described on a CPU host), so
that 'auto' picks what it would pick there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'attention_tables')
# The paths that hold the whole (groups, Nq, Nk) affinity (the fused path is XLA's unless cuDNN is asked for):
# 'auto' takes them only when that fits the block's max_affinity_bytes (or ``affinity_budget``), whatever the table
# ranks first.
MATERIALISING = ('naive', 'lean', 'fused')
CUDNN_MAX_HEAD_DIM = 256
# The float32 affinity a materialising path may hold when a block leaves ``max_affinity_bytes`` at None
# (``affinity_budget``). On a CPU 32 MiB, the size rule's threshold since the first version. On an accelerator a
# 1/128 share of what JAX may allocate there: a train step keeps each block's affinity and softmax for the
# backward pass, so even ten blocks at the budget hold under a sixth of the device. A fixed 32 MiB sent the H200's
# res3 blocks at 8 clips (75 MiB affinities) to the chunked path, which its table measured 1.7x slower than the
# fused one (1.93 against 1.15 ms forward+backward). An accelerator whose memory nobody states or reports keeps
# the CPU's 32 MiB.
CPU_AFFINITY_BYTES = 32 * 2**20
ACCELERATOR_MEMORY_SHARE = 128


def device_slug(device_kind: str) -> str:
  """'NVIDIA H200' -> 'nvidia-h200': the file name of a device's table and its benchmark results folder."""
  return re.sub(r'[^a-z0-9]+', '-', device_kind.lower()).strip('-') or 'unknown'


# (device, its memory in bytes or None) of other machines that programs are being compiled for
# (``compiling_for``), innermost last.
_TARGET = []


@contextlib.contextmanager
def compiling_for(device, memory_bytes: Optional[int] = None):
  """Within the block, 'auto' choices (tables, formulations, cuDNN's acceptance, the affinity budget) follow
  ``device`` (a ``jax.Device``, e.g. of ``jax.experimental.topologies``), not the default device: for
  ahead-of-time compilation for a machine this is not. ``memory_bytes``: what JAX could allocate on that device,
  which a device of another machine does not report (None: what it reports, if anything)."""
  _TARGET.append((device, memory_bytes))
  try:
    yield device
  finally:
    _TARGET.pop()


def target_device():
  """The device programs are compiled for: the innermost ``compiling_for``'s, else the default device."""
  return _TARGET[-1][0] if _TARGET else jax.devices()[0]


def target_backend() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of ``target_device`` (CUDA and ROCm devices are 'gpu')."""
  platform = target_device().platform
  return 'gpu' if platform in ('cuda', 'rocm', 'gpu') else platform


def target_memory_bytes() -> Optional[int]:
  """What JAX may allocate on ``target_device``: the memory ``compiling_for`` states, else the device's own
  ``bytes_limit``; None where neither is known (a topology's device, a backend without statistics)."""
  if _TARGET and _TARGET[-1][1] is not None:
    return int(_TARGET[-1][1])
  try:
    return (target_device().memory_stats() or {}).get('bytes_limit')
  except Exception:  # pylint: disable=broad-except  # A device of another machine has no statistics to read.
    return None


def affinity_budget() -> int:
  """The bytes of float32 affinity 'auto' lets a materialising path hold on ``target_device`` (see
  ``CPU_AFFINITY_BYTES``): 32 MiB on a CPU, 1/128 of an accelerator's memory where that is known."""
  memory = None if target_backend() == 'cpu' else target_memory_bytes()
  return memory // ACCELERATOR_MEMORY_SHARE if memory else CPU_AFFINITY_BYTES


def current_slug() -> str:
  """The slug of the device programs are compiled for (``target_device``)."""
  return device_slug(target_device().device_kind)


def table_path(slug: str) -> str:
  """Where the package keeps the table of the device ``slug``."""
  return os.path.join(TABLE_DIR, f'{slug}.json')


def load_table(path: str) -> Optional[dict]:
  """The table in ``path`` ({'device_kind', 'entries': [...]}), or None if there is none."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def _table_of(slug: str) -> Optional[dict]:
  return load_table(table_path(slug))


def current_table() -> Optional[dict]:
  """The committed table of the default device, or None (then 'auto' uses the size rule)."""
  return _table_of(current_slug())


def measured_formulation(field: str, network: Optional[str]) -> Optional[str]:
  """What the default device's table measured fastest for the model field ``field`` ('conv_implementation' or
  'pool_implementation') in networks of kind ``network`` ('c2d' or 'i3d'), or None where it measured nothing (no
  table, no such comparison, or no network kind: a layer used on its own)."""
  if network is None:
    return None
  return (((current_table() or {}).get('formulations') or {}).get(network) or {}).get(field)


def dtype_name(dtype) -> str:
  """'float32', 'bfloat16', ...: how tables name a compute dtype (None is float32)."""
  return jnp.dtype(dtype if dtype is not None else jnp.float32).name


def cudnn_refusal(dtype, head_dim: int, backend: Optional[str] = None) -> Optional[str]:
  """Why cuDNN's fused attention cannot run this case here (a clause for a log line), or None if it can; by the
  rules of ``backend`` if given, else of the device compiled for (``target_backend``)."""
  if backend is None:
    backend = target_backend()
    if backend == 'gpu' and jax.default_backend() != 'gpu':
      return 'JAX checks the local GPU when it traces it, and this program is compiled here for a GPU elsewhere'
  if backend != 'gpu':
    return f'it runs on CUDA GPUs only and this backend is {backend}'
  if dtype_name(dtype) not in ('bfloat16', 'float16'):
    return f'it takes bfloat16 or float16 and the block computes in {dtype_name(dtype)} (set model.dtype=bfloat16)'
  if head_dim > CUDNN_MAX_HEAD_DIM or head_dim % 8:
    return (f'its head size must be a multiple of 8 up to {CUDNN_MAX_HEAD_DIM} and here it is {head_dim} '
            "(res4's C'=512 and the Gaussian's C are too wide)")
  return None


def ranking(table: Optional[dict], pairwise: str, dtype, n_groups: int, n_query: int, n_key: int,
            inter_dim: int) -> Optional[Sequence[str]]:
  """The implementations of the measured case nearest to this one (same pairwise function and dtype; nearest in
  log affinity size and log C'), fastest first; None when the table has no such case."""
  if not table:
    return None
  cases = [e for e in table.get('entries', ()) if e['pairwise'] == pairwise and e['dtype'] == dtype_name(dtype)]
  if not cases:
    return None

  def distance(e):
    size = e['groups'] * e['n_query'] * e['n_key']
    return abs(math.log(size / (n_groups * n_query * n_key))) + abs(math.log(e['inter'] / inter_dim))
  return min(cases, key=distance)['ranking']


def make_entry(pairwise: str, dtype, n_groups: int, n_query: int, n_key: int, inter_dim: int,
               times_ms: dict) -> dict:
  """A table entry from the measured forward+backward times ({implementation: ms}) of one case."""
  return dict(pairwise=pairwise, dtype=dtype_name(dtype), groups=n_groups, n_query=n_query, n_key=n_key,
              inter=inter_dim, ranking=sorted(times_ms, key=times_ms.get),
              fwd_bwd_ms={k: round(v, 4) for k, v in times_ms.items()})


__all__ = ['ACCELERATOR_MEMORY_SHARE', 'CPU_AFFINITY_BYTES', 'CUDNN_MAX_HEAD_DIM', 'MATERIALISING', 'TABLE_DIR',
           'affinity_budget', 'compiling_for', 'cudnn_refusal', 'current_slug',
           'current_table', 'device_slug', 'dtype_name', 'load_table', 'make_entry', 'measured_formulation', 'ranking',
           'table_path', 'target_backend', 'target_device', 'target_memory_bytes']
