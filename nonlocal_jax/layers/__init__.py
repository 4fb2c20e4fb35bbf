"""Layers (pure Flax linen): the non-local block, its pairwise functions and implementations, the position
geometry of its attention, and its family of cheaper successors.

Modules: ``nonlocal_block`` (``NonLocalBlock`` and its parameters), ``pairwise`` (``PAIRWISE``: the table of
pairwise functions), ``attention`` (the exact implementations of eq. (1): naive, lean, chunked, reassociated,
fused, cudnn), ``attention_auto`` (the device's measured table that 'auto' reads, which paths a backend accepts),
``geometry`` (``PositionSets``: which positions attend to each other), ``family`` (``BLOCK_KINDS``: the blocks by
name), ``gc_block`` (``GCBlock``), ``asymmetric_block`` (``AsymmetricPyramidBlock``), ``criss_cross_block``
(``CrissCrossBlock``), ``cgnl_block`` (``CGNLBlock``), ``double_attention_block`` (``DoubleAttentionBlock``),
``block_common`` (what they share), ``pooling`` (max pooling whose backward pass needs no scatter),
``batch_norm`` (``FusedBatchNorm``: flax's BatchNorm, optionally with ReLU, with its backward pass written out).
"""

from nonlocal_jax.layers.asymmetric_block import AsymmetricPyramidBlock
from nonlocal_jax.layers.attention import IMPLEMENTATIONS, nonlocal_attention
from nonlocal_jax.layers.batch_norm import FusedBatchNorm
from nonlocal_jax.layers.cgnl_block import CGNLBlock
from nonlocal_jax.layers.criss_cross_block import CrissCrossBlock
from nonlocal_jax.layers.double_attention_block import DoubleAttentionBlock
from nonlocal_jax.layers.family import BLOCK_KINDS
from nonlocal_jax.layers.gc_block import GCBlock
from nonlocal_jax.layers.geometry import POSITION_SETS, PositionSets
from nonlocal_jax.layers.nonlocal_block import Affine, ConcatProjection, NonLocalBlock
from nonlocal_jax.layers.pairwise import PAIRWISE, PAIRWISE_FUNCTIONS, PairwiseFunction, pairwise_weights

__all__ = ['Affine', 'AsymmetricPyramidBlock', 'BLOCK_KINDS', 'CGNLBlock', 'ConcatProjection', 'CrissCrossBlock',
           'DoubleAttentionBlock', 'FusedBatchNorm', 'GCBlock', 'IMPLEMENTATIONS', 'NonLocalBlock', 'PAIRWISE',
           'PAIRWISE_FUNCTIONS', 'POSITION_SETS', 'PairwiseFunction', 'PositionSets', 'nonlocal_attention',
           'pairwise_weights']
