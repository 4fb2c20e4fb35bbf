"""The asymmetric pyramid non-local block (APNB) of Zhu et al., *Asymmetric Non-local Neural Networks for Semantic
Segmentation* (ICCV 2019), for 1D, 2D and 3D inputs (docs/family.md §2).

The non-local block with its keys and values taken at S anchor points instead of all N positions: the anchors
are the adaptive average pools of the feature map to n×n bins for each n of a pyramid (PSPNet's pooling), so
S = Σ n² (110 for the paper's bins 1, 3, 6, 8). Queries stay at every position, so the cost is O(N·S·C').

    θ = W_θ x, φ_P = W_φ P(x), γ_P = W_γ P(x)           P: the pyramid of anchors (the paper's P_φ, P_γ)
    y_i = Σ_s softmax_s(s · θ_iᵀ φ_P,s) γ_P,s              s = C'^-0.5 (the official code's scaling)
    fusion 'sum':    z = norm(W_z y) + x                   the non-local block's residual form
    fusion 'concat': z = W_f [norm(W_z y); x] + b_f         the paper's concatenation + 1×1 convolution

P pools x before φ and γ: average pooling commutes with an affine map, so this equals the paper's pooling of
φ(x) and γ(x) and costs S instead of N projections. Pooling follows PyTorch's adaptive average pooling: bin i of
n over L positions covers [⌊iL/n⌋, ⌈(i+1)L/n⌉), so bins may overlap, and n > L repeats positions.

Over time (3D), each spatial pyramid is taken per frame (``temporal_bins=None``: S = T · Σ n², every frame's
anchors visible to every query, so the block still relates frames) or over k adaptive time bins
(``temporal_bins=k``: S = k · Σ n²; k=1 averages time away). In 1D the pyramid is over the one axis: S = Σ n.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nonlocal_jax.layers import block_common

FUSIONS = ('sum', 'concat')


def adaptive_pool_matrix(length: int, bins: int) -> np.ndarray:
  """(bins, length) averaging weights of adaptive average pooling: bin i covers [⌊iL/n⌋, ⌈(i+1)L/n⌉)."""
  matrix = np.zeros((bins, length), np.float32)
  for i in range(bins):
    start, end = (i * length) // bins, -((-(i + 1) * length) // bins)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def _pool_axes(x, matrices):
  """Applies one (bins, length) matrix per non-channel axis of (B, *positions, C) x (None: keep the axis)."""
  for axis, matrix in enumerate(matrices):
    if matrix is not None:
      pooled = jnp.tensordot(jnp.asarray(matrix), x, axes=(1, axis + 1))
      x = jnp.moveaxis(pooled, 0, axis + 1)
  return x


def _identity_on_the_x_half(init, channels: int):
  """Initialiser of W_f (2C, C): ``init`` for the y half, the identity for the x half, so z = x at init."""
  def fuse_init(key, shape, dtype=jnp.float32):
    return jnp.concatenate([init(key, (channels, channels), dtype), jnp.eye(channels, dtype=dtype)], axis=0)
  return fuse_init


class AsymmetricPyramidBlock(nn.Module):
  """APNB: the non-local block's softmax attention over S pyramid-pooled anchors, with sum or concat fusion.

  Parameters (stable names, as NonLocalBlock's where they mean the same; every 1×1(×1) convolution is a
  ``Dense`` kernel (C_in, C_out) with a bias of (C_out,) unless ``use_bias=False``):

    theta/kernel, /bias    θ: C -> C' (queries, every position)
    phi/kernel, /bias      φ: C -> C' (keys, on the anchors)
    g/kernel, /bias        γ: C -> C' (values, on the anchors)
    out/kernel, /bias      W_z: C' -> C
    bn/scale, bn/bias      BatchNorm after W_z (norm='batch', γ_bn = ``bn_scale_init``, 0), or the affine of
                           frozen-BN networks (norm='affine'); batch_stats bn/mean, bn/var with 'batch'
    fuse/kernel, /bias     W_f: 2C -> C (fusion='concat' only), rows [y half; x half], the x half the identity
                           and the bias 0 at initialisation

  The block is the identity at initialisation: γ_bn = 0 (norm='batch') or W_z = 0 (norm 'affine'/'none'), and
  with 'concat' the x half of W_f is the identity. The softmax runs in float32 whatever ``dtype``; the weights
  (B, N, S) are sown as 'attention' when 'intermediates' is mutable and ``sow_attention``.

  Attributes:
    inter_channels: C', the width of θ, φ, γ; None: max(1, C // 2) (the paper's key and value channels).
    bins: the pyramid: each n pools the (spatial) positions to n×n bins (n bins in 1D); the paper: (1, 3, 6, 8).
    temporal_bins: 3D only: None keeps every frame (a spatial pyramid per frame), k pools time to k bins.
    scale: multiply θᵀφ by C'^-0.5 before the softmax (the official APNB code does).
    fusion: 'sum' (z = norm(W_z y) + x, the non-local block's residual) or 'concat' (the paper's W_f).
    norm, weight_init, use_bias, bn_scale_init, bn_momentum, bn_epsilon, bn_axis_name: as NonLocalBlock's
      (norm None is 'batch' on its own; in a network it follows the network's norm). W_f's y half takes
      ``weight_init``.
    sow_attention: sow the attention weights when 'intermediates' is mutable.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32 and the softmax runs in float32.
  """
  inter_channels: Optional[int] = None
  bins: Sequence[int] = (1, 3, 6, 8)
  temporal_bins: Optional[int] = None
  scale: bool = True
  fusion: str = 'sum'
  norm: Optional[str] = None
  weight_init: str = 'official'
  use_bias: bool = True
  bn_scale_init: float = 0.0
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: Optional[str] = None
  sow_attention: bool = True
  dtype: Any = None

  @nn.nowrap
  def check(self, input_rank: Optional[int] = None) -> None:
    """Validates the attributes (for inputs with ``input_rank`` non-channel axes when given); errors name them."""
    block_common.check_common(self)
    block_common.check_one_of('fusion', self.fusion, FUSIONS)
    bins = tuple(self.bins) if isinstance(self.bins, (list, tuple)) else ()
    if not bins or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in bins):
      raise ValueError(f'bins must be a non-empty sequence of positive integers such as (1, 3, 6, 8), got '
                       f'{self.bins!r}.')
    block_common.check_positive_int('temporal_bins', self.temporal_bins, optional=True)
    if input_rank is not None and input_rank not in (1, 2, 3):
      raise ValueError(f'AsymmetricPyramidBlock takes 1D, 2D or 3D inputs (input_rank 1, 2 or 3), got '
                       f'input_rank={input_rank!r}.')
    if input_rank is not None and input_rank != 3 and self.temporal_bins is not None:
      raise ValueError(f'temporal_bins={self.temporal_bins!r} applies to 3D input (B, T, H, W, C) only; leave it '
                       f'None for {input_rank}D input.')

  @nn.nowrap
  def _pool_matrices(self, spatial: Sequence[int], n: int) -> Tuple[Optional[np.ndarray], ...]:
    """Per non-channel axis, the pooling matrix of pyramid level ``n`` (None: the axis is kept)."""
    if len(spatial) == 3:
      time = None if self.temporal_bins is None else adaptive_pool_matrix(spatial[0], self.temporal_bins)
      return (time,) + tuple(adaptive_pool_matrix(s, n) for s in spatial[1:])
    return tuple(adaptive_pool_matrix(s, n) for s in spatial)

  @nn.nowrap
  def num_anchors(self, spatial: Sequence[int]) -> int:
    """S, the number of anchors for an input with non-channel sizes ``spatial``."""
    time = (self.temporal_bins or spatial[0]) if len(spatial) == 3 else 1
    pyramid_rank = min(len(spatial), 2)
    return time * sum(n ** pyramid_rank for n in self.bins)

  @nn.nowrap
  def attention_macs(self, input_shape: Sequence[int]) -> int:
    """Multiply-adds of θᵀφ_P and f·γ_P (N·S·C' each); the convolutions are counted as Dense layers by the
    summary, and the pooling is not counted (as pooling nowhere is)."""
    b, *spatial, c = (int(s) for s in input_shape)
    inter = self.inter_channels or max(1, c // 2)
    n = 1
    for s in spatial:
      n *= s
    return b * 2 * n * self.num_anchors(spatial) * inter

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Applies the block; ``train`` selects batch statistics (True) or running statistics for BatchNorm."""
    block_common.check_input_rank('AsymmetricPyramidBlock', x)
    self.check(x.ndim - 2)
    dtype = self.dtype or x.dtype
    norm = self.norm or 'batch'
    batch, spatial, channels = x.shape[0], x.shape[1:-1], x.shape[-1]
    inter = self.inter_channels or max(1, channels // 2)
    init = block_common.kernel_init(self.weight_init)
    dense = lambda features, name, k_init=init: nn.Dense(
        features, use_bias=self.use_bias, kernel_init=k_init, bias_init=nn.initializers.zeros, dtype=dtype,
        param_dtype=jnp.float32, name=name)

    # The anchors: each pyramid level pooled in float32, flattened, concatenated: (B, S, C).
    x32 = x.astype(jnp.float32)
    anchors = jnp.concatenate([_pool_axes(x32, self._pool_matrices(spatial, n)).reshape(batch, -1, channels)
                               for n in self.bins], axis=1).astype(dtype)
    q = dense(inter, 'theta')(x).reshape(batch, -1, inter)
    k, v = dense(inter, 'phi')(anchors), dense(inter, 'g')(anchors)

    logits = jnp.einsum('bnc,bsc->bns', q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits * (inter ** -0.5 if self.scale else 1.0), axis=-1)
    if self.sow_attention and self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'attention', weights)
    y = jnp.einsum('bns,bsc->bnc', weights.astype(dtype), v, preferred_element_type=jnp.float32).astype(dtype)
    y = y.reshape(x.shape[:-1] + (inter,))

    wz = dense(channels, 'out', init if norm == 'batch' else nn.initializers.zeros)(y)
    norm_module = block_common.output_norm(norm, train=train, scale_init=self.bn_scale_init,
                                           momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                           axis_name=self.bn_axis_name, dtype=dtype)
    if norm_module is not None:
      wz = norm_module(wz)
    if self.fusion == 'sum':
      return (wz + x.astype(dtype)).astype(dtype)
    both = jnp.concatenate([wz.astype(dtype), x.astype(dtype)], axis=-1)
    return dense(channels, 'fuse', _identity_on_the_x_half(init, channels))(both).astype(dtype)
