"""Where this process stands among the hosts of a run: its share of the batch and of a split.

Training: each process reads its slice of every global batch (``nonlocal_jax.data.order``). Evaluation: each reads a
contiguous share of the split. A process batches ``global_batch_size / jax.process_count()`` examples; the global
batch must split evenly over all devices.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
  """Where this process stands among the hosts of a run, and how many devices it feeds."""
  index: int  # jax.process_index().
  count: int  # jax.process_count().
  local_devices: int  # jax.local_device_count().

  @classmethod
  def from_jax(cls, index=None, count=None, local_devices=None) -> 'ProcessLayout':
    """The layout of the current JAX run, with any field overridden (tests pretend to be other hosts)."""
    if index is None or count is None or local_devices is None:
      # Imported only here: with a layout given (benchmarks, tests), the input pipelines run without JAX.
      import jax  # pylint: disable=g-import-not-at-top
      index = jax.process_index() if index is None else index
      count = jax.process_count() if count is None else count
      local_devices = jax.local_device_count() if local_devices is None else local_devices
    return cls(int(index), int(count), int(local_devices))


def local_batch_size(global_batch_size: int, layout: ProcessLayout, field: str = 'global_batch_size') -> int:
  """The per-process batch; raises if the global batch does not split evenly over all devices."""
  devices = layout.count * layout.local_devices
  if global_batch_size < 1 or global_batch_size % devices:
    raise ValueError(f'config.data.{field}={global_batch_size} must be a positive multiple of the {devices} '
                     'devices of this run: change it to a multiple.')
  return global_batch_size // layout.count


def share(num_examples: int, layout: ProcessLayout) -> tuple[int, int, int]:
  """This process's contiguous share of ``num_examples``: (first index, its size, the largest share's size)."""
  bounds = [num_examples * i // layout.count for i in range(layout.count + 1)]
  sizes = [b - a for a, b in zip(bounds, bounds[1:])]
  return bounds[layout.index], sizes[layout.index], max(sizes)
