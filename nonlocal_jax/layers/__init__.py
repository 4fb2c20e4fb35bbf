"""Layers (pure Flax linen): the non-local block, its pairwise functions and implementations, and the position
geometry of its attention.

Modules: ``nonlocal_block`` (``NonLocalBlock`` and its parameters), ``pairwise`` (``PAIRWISE``: the table of
pairwise functions), ``attention`` (the exact implementations of eq. (1): naive, chunked, reassociated, fused),
``geometry`` (``PositionSets``: which positions attend to each other); successors of the block (issue 17):
``cgnl_block`` (``CGNLBlock``), ``double_attention_block`` (``DoubleAttentionBlock``).
"""

from nonlocal_jax.layers.attention import IMPLEMENTATIONS, nonlocal_attention
from nonlocal_jax.layers.cgnl_block import CGNLBlock
from nonlocal_jax.layers.double_attention_block import DoubleAttentionBlock
from nonlocal_jax.layers.geometry import POSITION_SETS, PositionSets
from nonlocal_jax.layers.nonlocal_block import Affine, ConcatProjection, NonLocalBlock
from nonlocal_jax.layers.pairwise import PAIRWISE, PAIRWISE_FUNCTIONS, PairwiseFunction, pairwise_weights

__all__ = ['Affine', 'CGNLBlock', 'ConcatProjection', 'DoubleAttentionBlock', 'IMPLEMENTATIONS', 'NonLocalBlock',
           'PAIRWISE', 'PAIRWISE_FUNCTIONS', 'POSITION_SETS', 'PairwiseFunction', 'PositionSets', 'nonlocal_attention',
           'pairwise_weights']
