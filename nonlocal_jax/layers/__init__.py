"""Layers (pure Flax linen): the non-local block, its pairwise functions and implementations, and the position
geometry of its attention.

Modules: ``nonlocal_block`` (``NonLocalBlock`` and its parameters), ``pairwise`` (``PAIRWISE``: the table of
pairwise functions), ``attention`` (the exact implementations of eq. (1): naive, chunked, reassociated, fused,
cudnn), ``attention_auto`` (the device's measured table that 'auto' reads, which paths a backend accepts),
``geometry`` (``PositionSets``: which positions attend to each other).
"""

from nonlocal_jax.layers.attention import IMPLEMENTATIONS, nonlocal_attention
from nonlocal_jax.layers.geometry import POSITION_SETS, PositionSets
from nonlocal_jax.layers.nonlocal_block import Affine, ConcatProjection, NonLocalBlock
from nonlocal_jax.layers.pairwise import PAIRWISE, PAIRWISE_FUNCTIONS, PairwiseFunction, pairwise_weights

__all__ = ['Affine', 'ConcatProjection', 'IMPLEMENTATIONS', 'NonLocalBlock', 'PAIRWISE', 'PAIRWISE_FUNCTIONS',
           'POSITION_SETS', 'PairwiseFunction', 'PositionSets', 'nonlocal_attention', 'pairwise_weights']
