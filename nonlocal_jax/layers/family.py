"""The non-local family by name: ``BLOCK_KINDS``, the blocks a network can place where the paper puts non-local
blocks (``config.model.nonlocal_block.kind``; docs/family.md).

Every block here has the same interface as ``NonLocalBlock``: ``__call__(x, train)`` on channels-last input of
rank 1-3 (B, ..., C) with the same shape out, the identity at initialisation, ``check(input_rank)`` raising a
ValueError that names the attribute, a ``dtype`` field (the network sets it), and a way for the model summary
to count the multiply-adds that are not convolutions: ``attention_macs(input_shape)`` (the non-local block's own
count lives in ``nonlocal_jax.models.summary``). Blocks that hold a BatchNorm also have the fields ``norm``,
``bn_momentum``, ``bn_epsilon`` and ``bn_axis_name``, which the network sets from its own; so is a block's
``pool_implementation`` (the non-local block's subsampling).
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from nonlocal_jax.layers.asymmetric_block import AsymmetricPyramidBlock
from nonlocal_jax.layers.cgnl_block import CGNLBlock
from nonlocal_jax.layers.criss_cross_block import CrissCrossBlock
from nonlocal_jax.layers.double_attention_block import DoubleAttentionBlock
from nonlocal_jax.layers.gc_block import GCBlock
from nonlocal_jax.layers.nonlocal_block import NonLocalBlock

BLOCK_KINDS = {
    'nonlocal': NonLocalBlock,        # Wang et al. 2018: the paper's block (the default)
    'gc': GCBlock,                    # Cao et al. 2019: one query-independent context, a bottleneck transform
    'apnb': AsymmetricPyramidBlock,   # Zhu et al. 2019: keys and values at pyramid-pooled anchors
    'cc': CrissCrossBlock,            # Huang et al. 2019: attention along each position's lines, R steps
    'cgnl': CGNLBlock,                # Yue et al. 2018: attention over positions and channels, compactly
    'a2': DoubleAttentionBlock,       # Chen et al. 2018: gather n global descriptors, distribute them
}
DEFAULT_KIND = 'nonlocal'


def block_class(kind: str) -> type:
  """The block class of ``kind``; an unknown kind fails with the list of known ones."""
  if kind not in BLOCK_KINDS:
    raise ValueError(f'kind must be one of {tuple(BLOCK_KINDS)}, got {kind!r}.')
  return BLOCK_KINDS[kind]


def block_fields(kind: str) -> Tuple[str, ...]:
  """The dataclass fields of ``kind``'s block (its options), without Flax's 'parent' and 'name'."""
  return tuple(f.name for f in dataclasses.fields(block_class(kind)) if f.name not in ('parent', 'name'))
