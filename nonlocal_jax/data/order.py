"""The training stream's order: which example sits at each position, and which positions each process reads.

The stream is a pure function of the seed: position p of the global stream holds example ``perm_e[p mod N]`` of
epoch ``e = p div N``, where ``perm_e`` is a permutation of the split's N examples drawn from (seed, e). Epochs
stay whole (each example once per epoch) and reshuffle every epoch. Global batch b is positions
[b·B, (b+1)·B); process i of P reads its contiguous slice of it. So the global order depends on the seed alone,
never on the number of processes, worker threads or the step a run was resumed at, and resuming at batch k costs
one permutation of N indices, whatever k is (docs/input_pipeline.md).

Each example's augmentation draws from a generator seeded by (seed, position): the same clip at the same position
in every run, however the work is spread.
"""

from __future__ import annotations

import numpy as np

from nonlocal_jax.data import layout as layout_lib

_AUGMENT_STREAM = 0x5EED  # Keeps the augmentation generators apart from the permutation generators.


class TrainOrder:
  """Position → example of the endless, epoch-shuffled training stream of ``num_examples`` examples."""

  def __init__(self, num_examples: int, seed: int):
    if num_examples < 1:
      raise ValueError('The training split has no example: prepare the dataset again or choose another split.')
    self.num_examples = int(num_examples)
    self.seed = int(seed)
    self._cached = {}  # epoch → permutation; two epochs at most (a batch can straddle an epoch boundary).

  def permutation(self, epoch: int) -> np.ndarray:
    """The order of the examples in ``epoch``."""
    if epoch not in self._cached:
      if len(self._cached) >= 2:
        self._cached.pop(min(self._cached))
      rng = np.random.default_rng([self.seed, int(epoch)])
      self._cached[epoch] = rng.permutation(self.num_examples)
    return self._cached[epoch]

  def example(self, position: int) -> int:
    """The example at global stream ``position``."""
    epoch, offset = divmod(int(position), self.num_examples)
    return int(self.permutation(epoch)[offset])


def process_positions(batch_index: int, global_batch: int, layout: layout_lib.ProcessLayout) -> np.ndarray:
  """The global stream positions this process reads for global batch ``batch_index``, in batch order."""
  local = global_batch // layout.count
  start = int(batch_index) * global_batch + layout.index * local
  return np.arange(start, start + local, dtype=np.int64)


def augmentation_rng(seed: int, position: int) -> np.random.Generator:
  """The generator of the random choices (window, scale, crop, flip) for the example at ``position``."""
  return np.random.default_rng([int(seed), int(position), _AUGMENT_STREAM])
