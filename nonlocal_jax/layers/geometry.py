"""Which positions of a feature map attend to each other: the position sets of a non-local block.

A block relates every query position to the key positions of its *set*. For 1D/2D input, and for 3D input with
``positions='spacetime'``, the set is the whole map. For 3D (T, H, W) input:

    'space'                 one set per frame: (t, ·, ·) attends within frame t (Table 2d "space-only")
    'time'                  one set per location: (·, h, w) attends across the frames at (h, w) ("time-only")
    temporal_groups = k     one set per k consecutive frames (the official grouped non-local of the 128-frame
                            models); spacetime within the group

``PositionSets`` folds a (B, *grid, D) array into (B·sets, N, D), unfolds the result, counts the sets and their
sizes (for the multiply-add count of the summary) and maps a query to its row and the keys it sees (for the
attention maps). The block, ``nonlocal_jax.models.summary`` and ``nonlocal_jax.visualize`` all use it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

POSITION_SETS = ('spacetime', 'space', 'time')


@dataclasses.dataclass(frozen=True)
class PositionSets:
  """The position sets of a block: ``positions`` ('spacetime' | 'space' | 'time') and ``temporal_groups``.

  ``positions`` other than 'spacetime' and ``temporal_groups`` apply to 3D grids (T, H, W) only; on 1D/2D grids
  the whole map is one set (the block rejects those options for such input before folding).
  """
  positions: str = 'spacetime'
  temporal_groups: Optional[int] = None

  def _whole(self, rank: int) -> bool:
    """Whether a grid of ``rank`` axes is a single set."""
    return rank != 3 or (self.positions == 'spacetime' and self.temporal_groups is None)

  def fold(self, t):
    """(B, *grid, D) -> (B·sets, N, D): each row of the result is one set of positions."""
    b, d = t.shape[0], t.shape[-1]
    if self._whole(t.ndim - 2):
      return t.reshape(b, -1, d)
    _, frames, h, w, _ = t.shape
    if self.positions == 'space':
      return t.reshape(b * frames, h * w, d)
    if self.positions == 'time':
      return t.transpose(0, 2, 3, 1, 4).reshape(b * h * w, frames, d)
    k = self.temporal_groups
    return t.reshape(b * (frames // k), k * h * w, d)

  def unfold(self, y, like_shape: Sequence[int]):
    """Inverse of ``fold`` for an array of query positions: (B·sets, N, D) -> ``like_shape`` (B, *grid, D)."""
    if self._whole(len(like_shape) - 2):
      return y.reshape(like_shape)
    b, frames, h, w, d = like_shape
    if self.positions == 'time':
      return y.reshape(b, h, w, frames, d).transpose(0, 3, 1, 2, 4)
    return y.reshape(like_shape)

  def set_sizes(self, grid: Sequence[int], key_grid: Sequence[int]) -> Tuple[int, int, int]:
    """(sets per example, queries per set, keys per set) for a query ``grid`` and its subsampled ``key_grid``."""
    grid, key_grid = tuple(grid), tuple(key_grid)
    n_query, n_key = math.prod(grid), math.prod(key_grid)
    if self._whole(len(grid)):
      return 1, n_query, n_key
    if self.positions == 'space':
      return grid[0], grid[1] * grid[2], key_grid[1] * key_grid[2]
    if self.positions == 'time':
      return grid[1] * grid[2], grid[0], key_grid[0]
    sets = grid[0] // self.temporal_groups
    return sets, n_query // sets, n_key // sets

  def query_row(self, grid: Sequence[int], batch_index: int, query: Sequence[int]) -> Tuple[int, int]:
    """(set, row) of the folded arrays that hold query position ``query`` = (t, h, w) of example ``batch_index``."""
    t, h, w = (int(q) for q in query)
    big_t, big_h, big_w = grid
    if self.positions == 'space':
      return batch_index * big_t + t, h * big_w + w
    if self.positions == 'time':
      return (batch_index * big_h + h) * big_w + w, t
    if self.temporal_groups:
      k = self.temporal_groups
      return batch_index * (big_t // k) + t // k, ((t % k) * big_h + h) * big_w + w
    return batch_index, (t * big_h + h) * big_w + w

  def keys_seen(self, grid: Sequence[int], key_grid: Sequence[int], query: Sequence[int]) -> Tuple[slice, ...]:
    """The region of the (T', H', W') key grid that query (t, h, w) attends to, as one slice per axis.

    A row of the folded weights, reshaped to the region's shape, fills exactly this region.
    """
    t, h, w = (int(q) for q in query)
    kt, kh, kw = key_grid
    if self.positions == 'space':
      frame = t * kt // grid[0]
      return slice(frame, frame + 1), slice(0, kh), slice(0, kw)
    if self.positions == 'time':
      row, col = h * kh // grid[1], w * kw // grid[2]
      return slice(0, kt), slice(row, row + 1), slice(col, col + 1)
    if self.temporal_groups:
      per_group = kt // (grid[0] // self.temporal_groups)
      start = (t // self.temporal_groups) * per_group
      return slice(start, start + per_group), slice(0, kh), slice(0, kw)
    return slice(0, kt), slice(0, kh), slice(0, kw)
