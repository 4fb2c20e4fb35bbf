"""The double attention block of Chen et al., *A²-Nets: Double Attention Networks* (NeurIPS 2018).

Two attention steps over the N positions of a feature map X (channels-last, C channels):

    gather:      G = A softmax_N(B)ᵀ          A = φ(X): (m, N) features, B = θ(X): (n, N) attention maps;
                                              each map is a softmax over the N positions, so G's n columns
                                              are n global descriptors of m channels (second-order pooling)
    distribute:  z_i = Σ_{j=1..n} v_ij g_j    v_i = softmax_n(ρ(x_i)): at each position a softmax over the n
                                              descriptors, so z_i is a convex combination of them
    output:      x_i + W_out z_i              a 1×1(×1) projection m -> C and the residual

(the paper's eq. 2 for the gathering, its distribution step, and the block of its Fig. 2). Unlike the non-local
block no N×N array exists: the cost is O(N·n·m).

Input and output are channels-last of rank 3, 4 or 5: (B, L, C), (B, H, W, C) or (B, T, H, W, C); the positions
of all non-channel axes are gathered together (the paper's 3D block for video gathers over T·H·W).

Parameters (stable names), 1×1 projections stored as ``Dense`` kernels (C_in, C_out) with biases (C_out,) unless
``use_bias=False``:

    phi/kernel, phi/bias       φ: C -> m, the features gathered (the paper's A)
    theta/kernel, theta/bias   θ: C -> n, the attention maps of the gathering (B)
    rho/kernel, rho/bias       ρ: C -> n, the attention vectors of the distribution (V)
    out/kernel, out/bias       W_out: m -> C, zero at initialisation, so the block is the identity there

Both softmaxes run in float32 whatever the compute ``dtype``. docs/family.md §A² lists what this relies on.
"""

from __future__ import annotations

import math

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import pairwise as pairwise_lib

# He (MSRA) normal with fan-out for φ, θ, ρ, as the project's 'he' initialisation of the non-local block.
_HE_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class DoubleAttentionBlock(nn.Module):
  """Residual double attention block z = x + W_out(distribute(gather(x))) (see the module docstring).

  Attributes:
    descriptors: n, the number of attention maps and so of global descriptors; defaults to C // 4.
    descriptor_channels: m, the channels of each descriptor (of φ); defaults to C // 4.
    use_bias: whether φ, θ, ρ and W_out have biases.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32 and the softmaxes run in float32.
  """
  descriptors: Optional[int] = None
  descriptor_channels: Optional[int] = None
  use_bias: bool = True
  dtype: Any = None

  @nn.nowrap
  def check(self, input_rank: Optional[int] = None) -> None:
    """Validates the attributes (for inputs with ``input_rank`` non-channel axes when given); errors name them."""
    for name in ('descriptors', 'descriptor_channels'):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f'{name} must be a positive integer or None (C // 4), got {value!r}.')
    if not isinstance(self.use_bias, bool):
      raise ValueError(f'use_bias must be True or False, got {self.use_bias!r}.')
    if input_rank is not None and input_rank not in (1, 2, 3):
      raise ValueError(f'DoubleAttentionBlock takes 1D, 2D or 3D inputs, got input_rank={input_rank!r}.')

  def _widths(self, x) -> Tuple[int, int, int]:
    """(C, n, m) after checking the input's rank."""
    if x.ndim not in (3, 4, 5):
      raise ValueError(f'DoubleAttentionBlock expects channels-last input of rank 3, 4 or 5 ((B, L, C), '
                       f'(B, H, W, C) or (B, T, H, W, C)); got shape {tuple(x.shape)}.')
    self.check(x.ndim - 2)
    channels = x.shape[-1]
    default = max(1, channels // 4)
    return channels, self.descriptors or default, self.descriptor_channels or default

  def attention_macs(self, input_shape) -> int:
    """Multiply-adds beyond the Dense projections (which the summary counts): gathering the n descriptors and
    distributing them, N·n·m each (docs/family.md §Cost)."""
    b, *spatial, c = (int(s) for s in input_shape)
    n_pos = math.prod(spatial)
    return b * 2 * n_pos * (self.descriptors or c // 4) * (self.descriptor_channels or c // 4)

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Applies the block. ``train`` is accepted for the common block call; the block has no running state."""
    del train
    channels, n, m = self._widths(x)
    dtype = self.dtype or x.dtype
    dense = lambda features, name, init=_HE_INIT: nn.Dense(
        features, use_bias=self.use_bias, kernel_init=init, bias_init=nn.initializers.zeros, dtype=dtype,
        param_dtype=jnp.float32, name=name)
    flat = x.reshape(x.shape[0], -1, channels)  # (B, N, C): all positions together
    features = dense(m, 'phi')(flat)  # A: (B, N, m)
    acc = pairwise_lib.accumulation_dtype(features)
    # Gathering: each of the n maps is a distribution over the N positions.
    maps = jax.nn.softmax(dense(n, 'theta')(flat).astype(acc), axis=1)  # (B, N, n)
    descriptors = jnp.einsum('bNm,bNn->bnm', features.astype(acc), maps)  # G: (B, n, m)
    # Distribution: at each position a distribution over the n descriptors.
    weights = jax.nn.softmax(dense(n, 'rho')(flat).astype(acc), axis=-1)  # (B, N, n)
    z = jnp.einsum('bNn,bnm->bNm', weights, descriptors).astype(dtype)
    out = dense(channels, 'out', nn.initializers.zeros)(z)
    return (out.reshape(x.shape) + x.astype(dtype)).astype(dtype)
