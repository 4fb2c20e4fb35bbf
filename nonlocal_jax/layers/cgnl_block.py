"""The compact generalised non-local block of Yue et al., *Compact Generalized Non-local Network* (NeurIPS 2018).

The generalised non-local operation relates every (position, channel) element to every other one, not only
every position to every position. With θ, φ, g the 1×1(×1) projections C -> C' flattened over positions and
channels, vec(·) of length N·C':

    vec(y) = f(vec(θ(x)), vec(φ(x))) vec(g(x))                    (the generalised non-local operation)

an (N·C')×(N·C') affinity that the paper never forms: f is a kernel with a finite feature expansion
f(a, b) = Σ_p ψ_p(a) ψ_p(b), so each element of y is

    y_k = Σ_p ψ_p(θ_k) · Σ_l ψ_p(φ_l) g_l                         (the compact representation)

- dot product, f(a, b) = a·b: y_k = θ_k · Σ_l φ_l g_l (one scalar per group).
- Gaussian RBF, f(a, b) = exp(-γ(a - b)²), by its Taylor series truncated at order P, with the official code's
  envelope exp(-γ(a² + b²)) taken as exp(-2γ):
      f(a, b) ≈ Σ_{p=0..P} β_p a^p b^p,   β_p = exp(-2γ) (2γ)^p / p!
      y_k = Σ_p β_p θ_k^p · Σ_l φ_l^p g_l
With ``scale`` the sums are divided by sqrt(N·C'/G) (the official code's use_scale).

Channel groups: the C' channels split into G groups of C'/G, each its own generalised non-local operation over
N·C'/G elements. Then a grouped 1×1 projection C' -> C (G groups), a GroupNorm with G groups, and the residual:

    z = GN(W_z y) + x

Input and output are channels-last of rank 3, 4 or 5: (B, L, C), (B, H, W, C) or (B, T, H, W, C).

Parameters (stable names). 1×1 projections are stored as ``Dense`` kernels (C_in, C_out); none has a bias (the
paper's convolutions have none):

    theta/kernel   θ: (C, C')
    phi/kernel     φ: (C, C')
    g/kernel       g: (C, C')
    out/kernel     W_z: (C'/G, C), the grouped 1×1 projection in Flax's grouped-convolution layout: output
                   channel o reads the input channels of group o // (C/G)
    gn/scale, gn/bias   the GroupNorm's affine transform (C,); the scale starts at ``norm_scale_init`` = 0, so the
                   block is the identity at initialisation

The kernel sums accumulate in float32 whatever the compute ``dtype`` (there is no softmax in this block).
docs/family.md §CGNL lists what this relies on.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from nonlocal_jax.layers import pairwise as pairwise_lib

KERNELS = ('dot_product', 'gaussian')

# He (MSRA) normal with fan-out, as the official code's ResNet initialises every convolution.
_HE_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def taylor_coefficients(order: int, gamma: float) -> Tuple[float, ...]:
  """β_p = exp(-2γ) (2γ)^p / p! for p = 0..order: the truncated Taylor series of the Gaussian RBF kernel."""
  return tuple(math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) for p in range(order + 1))


class CGNLBlock(nn.Module):
  """Residual compact generalised non-local block z = GN(W_z y) + x (see the module docstring).

  Attributes:
    kernel: 'dot_product' or 'gaussian' (the Taylor-expanded Gaussian RBF kernel).
    order: P, the highest power of the Taylor series (kernel='gaussian' only); the paper's setting is 3.
    gamma: γ of the Gaussian RBF kernel (kernel='gaussian' only); the official code uses 1e-4.
    groups: G, the channel groups of the kernel, of W_z and of the GroupNorm; must divide C' and C.
    inter_channels: C', the width of θ, φ, g; defaults to C // 2.
    scale: divide the kernel sums by sqrt(N·C'/G) (official use_scale; off by default there).
    norm_scale_init: the GroupNorm scale at initialisation; 0 makes the block the identity.
    epsilon: the GroupNorm epsilon.
    dtype: compute dtype of the projections; parameters stay float32 and the kernel sums run in float32.
  """
  kernel: str = 'dot_product'
  order: int = 3
  gamma: float = 1e-4
  groups: int = 1
  inter_channels: Optional[int] = None
  scale: bool = False
  norm_scale_init: float = 0.0
  epsilon: float = 1e-5
  dtype: Any = None

  @nn.nowrap
  def check(self, input_rank: Optional[int] = None) -> None:
    """Validates the attributes (for inputs with ``input_rank`` non-channel axes when given); errors name them."""
    if self.kernel not in KERNELS:
      raise ValueError(f'kernel must be one of {KERNELS}, got {self.kernel!r}.')
    if not isinstance(self.order, int) or isinstance(self.order, bool) or self.order < 0:
      raise ValueError(f'order must be a non-negative integer (the paper uses 3), got {self.order!r}.')
    if not isinstance(self.gamma, (int, float)) or not 0 < self.gamma < float('inf'):
      raise ValueError(f'gamma must be a positive number (the official code uses 1e-4), got {self.gamma!r}.')
    if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
      raise ValueError(f'groups must be a positive integer, got {self.groups!r}.')
    if self.inter_channels is not None and (not isinstance(self.inter_channels, int) or self.inter_channels < 1):
      raise ValueError(f'inter_channels must be a positive integer or None, got {self.inter_channels!r}.')
    if self.inter_channels is not None and self.inter_channels % self.groups:
      raise ValueError(f'groups={self.groups} must divide inter_channels={self.inter_channels}.')
    if not isinstance(self.scale, bool):
      raise ValueError(f'scale must be True or False, got {self.scale!r}.')
    if not isinstance(self.norm_scale_init, (int, float)) or not math.isfinite(self.norm_scale_init):
      raise ValueError(f'norm_scale_init must be a finite number (0 for the identity at initialisation), got '
                       f'{self.norm_scale_init!r}.')
    if not isinstance(self.epsilon, (int, float)) or not 0 < self.epsilon < float('inf'):
      raise ValueError(f'epsilon must be a positive number, got {self.epsilon!r}.')
    if input_rank is not None and input_rank not in (1, 2, 3):
      raise ValueError(f'CGNLBlock takes 1D, 2D or 3D inputs, got input_rank={input_rank!r}.')

  def _channels(self, x) -> Tuple[int, int]:
    """(C, C') after checking the input's rank and that the groups divide both widths."""
    if x.ndim not in (3, 4, 5):
      raise ValueError(f'CGNLBlock expects channels-last input of rank 3, 4 or 5 ((B, L, C), (B, H, W, C) or '
                       f'(B, T, H, W, C)); got shape {tuple(x.shape)}.')
    self.check(x.ndim - 2)
    channels = x.shape[-1]
    inter = self.inter_channels or max(1, channels // 2)
    if channels % self.groups or inter % self.groups:
      raise ValueError(f'groups={self.groups} must divide the input channels C={channels} and C\'={inter} '
                       '(inter_channels, default C // 2).')
    return channels, inter

  def attention_macs(self, input_shape) -> int:
    """Multiply-adds beyond the θ, φ, g Dense layers (which the summary counts): one N·C' sum per kernel term, and
    the grouped W_z (docs/family.md §Cost)."""
    b, *spatial, c = (int(s) for s in input_shape)
    n = math.prod(spatial)
    inter = self.inter_channels or c // 2
    terms = 1 if self.kernel == 'dot_product' else self.order + 1
    return b * (terms * n * inter + n * (inter // self.groups) * c)

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Applies the block. ``train`` is accepted for the common block call; GroupNorm has no running state."""
    del train
    channels, inter = self._channels(x)
    dtype = self.dtype or x.dtype
    dense = lambda name: nn.Dense(inter, use_bias=False, kernel_init=_HE_INIT, dtype=dtype,
                                  param_dtype=jnp.float32, name=name)
    theta, phi, g = dense('theta')(x), dense('phi')(x), dense('g')(x)

    # (B, N, G, C'/G): each group's N·C'/G elements form one generalised non-local operation.
    b, per_group = x.shape[0], inter // self.groups
    acc = pairwise_lib.accumulation_dtype(theta)
    split = lambda t: t.astype(acc).reshape(b, -1, self.groups, per_group)
    theta, phi, g = split(theta), split(phi), split(g)
    norm = math.sqrt(theta.shape[1] * per_group) if self.scale else 1.0
    if self.kernel == 'dot_product':
      powers, betas = (1,), (1.0,)
    else:
      powers, betas = range(self.order + 1), taylor_coefficients(self.order, self.gamma)
    y = jnp.zeros_like(theta)
    for p, beta in zip(powers, betas):
      # Σ_l φ_l^p g_l over the group's positions and channels: one scalar per (batch, group). The 0th power is
      # written as ones: d(a^0)/da must be 0, not 0·a^-1.
      theta_p, phi_p = (theta ** p, phi ** p) if p else (jnp.ones_like(theta), jnp.ones_like(phi))
      s = jnp.einsum('bngc,bngc->bg', phi_p, g) * (beta / norm)
      y = y + theta_p * s[:, None, :, None]

    # The grouped W_z: group k of y feeds output channels k·C/G .. (k+1)·C/G - 1.
    out = _GroupedProjection(channels, self.groups, dtype=dtype, name='out')(y.astype(dtype))
    out = out.reshape(x.shape[:-1] + (channels,))
    out = nn.GroupNorm(num_groups=self.groups, epsilon=self.epsilon, dtype=dtype, param_dtype=jnp.float32,
                       scale_init=nn.initializers.constant(self.norm_scale_init), use_fast_variance=False,
                       name='gn')(out)
    return (out + x.astype(dtype)).astype(dtype)


class _GroupedProjection(nn.Module):
  """A grouped 1×1 projection: (B, N, G, C'/G) -> (B, N, C), kernel (C'/G, C) as Flax's grouped convolution."""
  features: int
  groups: int
  dtype: Any = None

  @nn.compact
  def __call__(self, y):
    per_group = y.shape[-1]
    kernel = self.param('kernel', _HE_INIT, (per_group, self.features), jnp.float32)
    kernel = kernel.astype(self.dtype).reshape(per_group, self.groups, self.features // self.groups)
    out = jnp.einsum('bngi,igo->bngo', y, kernel)
    return out.reshape(y.shape[:2] + (self.features,))
