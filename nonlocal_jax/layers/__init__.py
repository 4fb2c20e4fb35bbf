"""Layers: the non-local block and its pairwise functions (pure Flax linen)."""

from nonlocal_jax.layers.attention import IMPLEMENTATIONS, PAIRWISE_FUNCTIONS, nonlocal_attention
from nonlocal_jax.layers.nonlocal_block import Affine, ConcatProjection, NonLocalBlock

__all__ = ['Affine', 'ConcatProjection', 'IMPLEMENTATIONS', 'NonLocalBlock', 'PAIRWISE_FUNCTIONS',
           'nonlocal_attention']
