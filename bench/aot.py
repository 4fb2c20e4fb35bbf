"""The train step compiled ahead of time for devices this machine does not have (a GPU or TPU topology described
on a CPU host; ``bench.gpu_compile``, ``bench.tpu_compile``): the compiled program, its memory and XLA's counts."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from nonlocal_jax.layers import attention_auto
from nonlocal_jax.training.trainer import Trainer


def compile_train_step(config, mesh, compiler_options=None, memory_bytes=None):
  """(compiled ``Trainer.train_step``, seconds) for ``config`` on ``mesh`` (axis 'batch'), from abstract state and
  batch; the models' 'auto' choices are made for the mesh's devices (``attention_auto.compiling_for``), whose
  memory JAX would have to allocate from is ``memory_bytes`` per device (a topology's devices report none)."""
  trainer = Trainer(config, mesh)
  replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec('batch'))
  d = config.data
  batch = {'clips': jax.ShapeDtypeStruct((d.global_batch_size, d.num_frames, d.crop_size, d.crop_size, 3),
                                         jnp.float32, sharding=split),
           'label': jax.ShapeDtypeStruct((d.global_batch_size,), jnp.int32, sharding=split)}
  start = time.perf_counter()
  with attention_auto.compiling_for(mesh.devices.flat[0], memory_bytes):
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                         jax.eval_shape(trainer.init_state))
    lowered = trainer.train_step.lower(state, batch)
  compiled = lowered.compile(compiler_options=compiler_options or None)
  return compiled, time.perf_counter() - start


def xla_cost(compiled) -> dict:
  """XLA's cost analysis of the compiled module ({'flops', 'bytes accessed', ...}; {} if none can be had). A GPU
  compile-only executable has none of its own: XLA's generic analysis of its module is run through the CPU
  client (a private JAX API, hence the fallback)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # A GPU compile-only executable raises UNIMPLEMENTED.
    cost = None
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  if cost:
    return dict(cost)
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
    module = compiled.runtime_executable().hlo_modules()[0]
    return dict(_jax.hlo_module_cost_analysis(xla_bridge.get_backend('cpu'), module))
  except Exception:  # pylint: disable=broad-except
    return {}


def memory_gib(compiled) -> dict:
  """Per device, in GiB: the step's temporaries, and the total it holds (arguments + outputs + temporaries +
  code, less the donated arguments that outputs reuse)."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           + m.generated_code_size_in_bytes - m.alias_size_in_bytes)
  return {'temp_gib': m.temp_size_in_bytes / 2**30, 'total_gib': total / 2**30}


def compile_pieces(pieces, compile_piece) -> list:
  """``compile_piece(**piece)`` for each piece (a dict of names), in order, printing progress; a piece that fails
  is kept as the piece with its ``error``, so one failure leaves the others' facts."""
  results = []
  for piece in pieces:
    print(f"compiling {' '.join(map(str, piece.values()))} ...", flush=True)
    try:
      results.append(compile_piece(**piece))
    except Exception as e:  # pylint: disable=broad-except
      results.append(dict(piece, error=f'{type(e).__name__}: {str(e)[:300]}'))
  return results
