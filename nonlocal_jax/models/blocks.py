"""Residual blocks shared by the video and image ResNets, for inputs of any spatial rank (2D images, 3D clips).

Parameter names follow the official Caffe2 blobs (see ``nonlocal_jax.models.naming``): inside a residual block
``branch2a``, ``branch2b``, ``branch2c`` are the convolutions of the residual branch, ``branch1`` the projection
shortcut, and each is followed by a normalisation layer named ``<conv>_bn``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import Affine
from nonlocal_jax.layers import attention_auto
from nonlocal_jax.layers import batch_norm

NORMS = ('batch', 'affine')

# Caffe2 MSRAFill, which the official code uses for every convolution: He normal with fan-out.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# Official FC_INIT_STD for the classifier.
FC_INIT = nn.initializers.normal(stddev=0.01)


def symmetric_padding(kernel_size: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
  """Padding k // 2 on both sides of each axis, as Caffe2 and PyTorch pad (not XLA's asymmetric 'SAME')."""
  return tuple((k // 2, k // 2) for k in kernel_size)


CONV_IMPLEMENTATIONS = ('auto', 'native', 'folded')


class Conv(nn.Module):
  """A bias-free convolution over channels-last input of any spatial rank, padded by k // 2 on both sides.

  Its one parameter is ``kernel`` (*kernel_size, C_in, features), as ``flax.linen.Conv`` stores it.

  For video (rank 5) it can run as 2D convolutions with time folded into the batch ('folded'): a kT×kH×kW
  kernel becomes the sum over its kT temporal taps of kH×kW convolutions of the strided frame slices (for a
  thin input such as RGB, one kH×kW convolution of the taps stacked along channels), and a temporal kT×1×1
  kernel one kT×1 convolution over (frames, positions). The result is the same convolution; XLA:CPU runs 2D
  convolutions several times faster than 3D ones (bench/models.py), and XLA gives cuDNN 2D convolutions
  channels-last on Hopper GPUs, 3D ones channels-first (bench/gpu_compile.py).

  Attributes:
    features: output channels.
    kernel_size: kernel extent per spatial axis, e.g. (1, 3, 3) or (7, 7).
    strides: stride per spatial axis (None: 1).
    implementation: 'native' (one N-D convolution), 'folded' (2D convolutions, video only) or 'auto'
      ('folded' on CPU, 'native' on other backends).
    kernel_init: initialiser of the kernel.
    dtype: compute dtype (the kernel is stored in float32).
  """
  features: int
  kernel_size: Tuple[int, ...]
  strides: Optional[Tuple[int, ...]] = None
  implementation: str = 'auto'
  kernel_init: Any = CONV_INIT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """Convolves ``x`` (B, *spatial, C_in) -> (B, *spatial', features)."""
    kernel_size = tuple(self.kernel_size)
    strides = tuple(self.strides) if self.strides else (1,) * len(kernel_size)
    kernel = self.param('kernel', self.kernel_init, kernel_size + (x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    padding = symmetric_padding(kernel_size)
    if resolve_conv_implementation(self.implementation) == 'native' or x.ndim != 5:
      return _conv(x, kernel, strides, padding)
    return _folded_conv3d(x, kernel, strides, padding)


def resolve_conv_implementation(implementation: str, network: Optional[str] = None) -> str:
  """The concrete implementation ('native' or 'folded') that ``implementation`` stands for: for 'auto', what the
  device's table measured fastest for networks of kind ``network`` ('c2d', 'i3d'; None for a layer on its own;
  ``attention_auto.measured_formulation``), else 'folded' on CPU (XLA:CPU runs 2D convolutions several times
  faster) and 'native' elsewhere (the device compiled for: ``attention_auto.target_backend``)."""
  if implementation == 'auto':
    measured = attention_auto.measured_formulation('conv_implementation', network)
    return measured or ('folded' if attention_auto.target_backend() == 'cpu' else 'native')
  return implementation


def _conv(x, kernel, strides, padding):
  rank = x.ndim - 2
  spatial = 'DHW'[-rank:]
  numbers = (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C')
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=numbers)


def _folded_conv3d(x, kernel, strides, padding):
  """A 3D convolution computed with 2D convolutions over the frames (see ``Conv``)."""
  kt, kh, kw, c_in, c_out = kernel.shape
  st = strides[0]
  x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0))) if padding[0] != (0, 0) else x
  b, t = x.shape[:2]
  if kt > 1 and kh == kw == 1:
    # A temporal kernel (I3D's kT×1×1): one 2D convolution over (frames, positions) with a kT×1 kernel, rather than
    # kT convolutions of folded frames. A 1×1 kernel's spatial stride only subsamples (and it has no padding).
    x = x[:, :, ::strides[1], ::strides[2]]
    h, w = x.shape[2:4]
    y = _conv(x.reshape(b, t, h * w, c_in), kernel.reshape(kt, 1, c_in, c_out), (st, 1), ((0, 0), (0, 0)))
    return y.reshape(b, y.shape[1], h, w, c_out)
  t_out = (t - kt) // st + 1
  taps = [x[:, d:d + st * (t_out - 1) + 1:st] for d in range(kt)]  # (B, T_out, H, W, C_in) each
  fold = lambda v: v.reshape((b * t_out,) + v.shape[2:])
  if kt == 1:
    y = _conv(fold(taps[0]), kernel[0], strides[1:], padding[1:])
  elif c_in < 16:
    # Thin input (the RGB stem): one convolution of the stacked taps fills the machine better than kT thin ones.
    stacked = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * c_in, c_out)
    y = _conv(fold(jnp.concatenate(taps, axis=-1)), stacked, strides[1:], padding[1:])
  else:
    y = sum(_conv(fold(tap), kernel[d], strides[1:], padding[1:]) for d, tap in enumerate(taps))
  return y.reshape((b, t_out) + y.shape[1:])


def conv_factory(dtype: Any, implementation: str = 'auto') -> Callable[..., Conv]:
  """Returns ``conv(features, kernel_size, strides, name=...)`` building a bias-free, officially initialised conv."""
  def conv(features: int, kernel_size: Sequence[int], strides: Optional[Sequence[int]] = None, *, name: str):
    return Conv(features, tuple(kernel_size), tuple(strides) if strides else None,
                implementation=implementation, dtype=dtype, name=name)
  return conv


def norm_factory(norm: str, *, train: bool, momentum: float, epsilon: float, axis_name: Optional[str],
                 dtype: Any, implementation: str = 'auto') -> Callable[..., Callable]:
  """Returns ``norm(name=..., scale_init=..., relu=False)``: a BatchNorm (norm='batch') or a frozen per-channel
  affine, followed by ReLU when ``relu``.

  With norm='batch', ``train`` selects batch statistics (and running-average updates) or the running averages;
  ``axis_name`` averages the batch statistics over a mapped device axis (synchronised BN); ``implementation``
  ('auto', 'flax', 'fused'; ``layers.batch_norm.resolve``) says whose backward pass BatchNorm has. The fused one
  takes the ReLU in; otherwise it is applied after the module.
  """
  if norm == 'batch':
    if batch_norm.resolve(implementation, axis_name) == 'fused':
      return functools.partial(batch_norm.FusedBatchNorm, use_running_average=not train, momentum=momentum,
                               epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32)
    module = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=momentum, epsilon=epsilon,
                               axis_name=axis_name, dtype=dtype, param_dtype=jnp.float32)
  elif norm == 'affine':
    module = functools.partial(Affine, dtype=dtype)
  else:
    raise ValueError(f'norm must be one of {NORMS}, got {norm!r}.')

  def make(*, relu: bool = False, **kwargs):
    layer = module(**kwargs)
    return (lambda x: nn.relu(layer(x))) if relu else layer
  return make


class ResidualBlock(nn.Module):
  """The fields both residual blocks take (so the networks build either the same way); see each block."""
  inner_features: int
  out_features: int
  strides: Tuple[int, ...]
  kernel_a: Tuple[int, ...]
  kernel_b: Tuple[int, ...]
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  stride_in_1x1: bool = False
  residual_bn_init: float = 1.0



class Bottleneck(ResidualBlock):
  """The 1×1 – 3×3 – 1×1 bottleneck residual block, relu(F(x) + shortcut(x)), of any spatial rank.

  Attributes:
    inner_features: width of branch2a and branch2b.
    out_features: width of branch2c and of the block output.
    strides: spatial stride of the block, one entry per non-channel axis (e.g. (1, 2, 2) for video).
    kernel_a: kernel of branch2a: (1, 1, 1), or (3, 1, 1) for an inflated I3D 3×1×1 block.
    kernel_b: kernel of branch2b: (1, 3, 3), or (3, 3, 3) for an inflated I3D 3×3×3 block; (3, 3) in 2D.
    stride_in_1x1: put the stride on branch2a (the original MSRA ResNet) instead of branch2b (official
      video code, torchvision "v1.5").
    conv: factory from ``conv_factory``.
    norm: factory from ``norm_factory``.
    residual_bn_init: initial scale γ of branch2c_bn (official MODEL.BN_INIT_GAMMA); 0 makes the block start
      as relu(shortcut(x)).
  """
  @nn.compact
  def __call__(self, x):
    """Applies the block to channels-last ``x``."""
    ones = (1,) * len(self.strides)
    stride_a, stride_b = (self.strides, ones) if self.stride_in_1x1 else (ones, self.strides)
    y = self.conv(self.inner_features, self.kernel_a, stride_a, name='branch2a')(x)
    y = self.norm(name='branch2a_bn', relu=True)(y)
    y = self.conv(self.inner_features, self.kernel_b, stride_b, name='branch2b')(y)
    y = self.norm(name='branch2b_bn', relu=True)(y)
    y = self.conv(self.out_features, ones, name='branch2c')(y)
    y = self.norm(name='branch2c_bn', scale_init=nn.initializers.constant(self.residual_bn_init))(y)
    return nn.relu(y + _shortcut(self, x))


class BasicBlock(ResidualBlock):
  """The two-3×3 residual block of ResNet-18/34 and CIFAR ResNets, of any spatial rank.

  Attributes:
    inner_features: width of branch2a (equal to out_features in the standard networks).
    out_features: width of branch2b and of the block output.
    strides: spatial stride of the block (on branch2a), one entry per non-channel axis.
    kernel_a: kernel of branch2a, e.g. (3, 3).
    kernel_b: kernel of branch2b, e.g. (3, 3).
    conv: factory from ``conv_factory``.
    norm: factory from ``norm_factory``.
    stride_in_1x1: unused (no 1×1 in this block); kept so both blocks take the same arguments.
    residual_bn_init: initial scale γ of branch2b_bn.
  """
  @nn.compact
  def __call__(self, x):
    """Applies the block to channels-last ``x``."""
    y = self.conv(self.inner_features, self.kernel_a, self.strides, name='branch2a')(x)
    y = self.norm(name='branch2a_bn', relu=True)(y)
    y = self.conv(self.out_features, self.kernel_b, name='branch2b')(y)
    y = self.norm(name='branch2b_bn', scale_init=nn.initializers.constant(self.residual_bn_init))(y)
    return nn.relu(y + _shortcut(self, x))


def _shortcut(block, x):
  """Identity, or (as the official 'type B' shortcut) a strided 1×1 projection when the shape changes."""
  if x.shape[-1] == block.out_features and all(s == 1 for s in block.strides):
    return x
  ones = (1,) * len(block.strides)
  y = block.conv(block.out_features, ones, block.strides, name='branch1')(x)
  return block.norm(name='branch1_bn')(y)


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int) -> int:
  """Output length of a convolution or pooling along one axis (floor mode, as XLA, Caffe2 and PyTorch)."""
  return (size + pad_lo + pad_hi - kernel) // stride + 1
