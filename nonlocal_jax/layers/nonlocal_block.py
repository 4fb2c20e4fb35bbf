"""The non-local block of Wang et al., *Non-local Neural Networks* (CVPR 2018), for 1D, 2D and 3D inputs.

    y_i = (1 / C(x)) Σ_j f(x_i, x_j) g(x_j)        (eq. 1)
    z_i = W_z y_i + x_i                            (eq. 6)

Input and output are channels-last of any spatial rank: (B, L, C), (B, H, W, C) or (B, T, H, W, C).

Parameters (names are stable: checkpoint loading and the Caffe2 conversion depend on them). Every 1×1(×1)
convolution is stored as a ``Dense`` kernel of shape (C_in, C_out), with a ``bias`` of shape (C_out,) unless
``use_bias=False``; the official Caffe2 blob ``nonlocal_conv4_3_theta_w`` of shape (C', C, 1, 1, 1) is the
transpose of ``theta/kernel``.

    theta/kernel, theta/bias   θ: C -> C'      (absent for pairwise='gaussian')
    phi/kernel, phi/bias       φ: C -> C'      (absent for pairwise='gaussian')
    g/kernel, g/bias           g: C -> C'
    concat_project/kernel      w_f: (2·C', 1), no bias, followed by ReLU (pairwise='concatenation' only)
    out/kernel, out/bias       W_z: C' -> C
    bn/scale, bn/bias          the BatchNorm after W_z (norm='batch'; scale initialised to 0), or the
                               per-channel affine transform of frozen-BN models (norm='affine')
    batch_stats: bn/mean, bn/var   BatchNorm running statistics (norm='batch')

With ``norm='batch'`` (the paper) the block is the identity at initialisation because the BN scale γ starts
at 0; with ``norm='affine'`` or ``'none'`` (the official frozen-BN models) the W_z kernel starts at 0 instead.

The normalised attention weights of the block can be collected the Flax way:

    z, state = block.apply(variables, x, train=False, mutable=['intermediates'])
    weights = state['intermediates']['attention'][0]    # (B·groups, N_query, N_key)

They are computed only when 'intermediates' is mutable, so the memory-frugal paths stay frugal otherwise.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import attention
from nonlocal_jax.layers import pairwise as pairwise_lib
from nonlocal_jax.layers import pooling
from nonlocal_jax.layers.geometry import POSITION_SETS, PositionSets

POOL_POSITIONS = ('before', 'after')
NORMS = ('batch', 'affine', 'none')
INITS = ('official', 'he')

# Official code: GaussianFill std 0.01 for θ, φ, g and W_z. He (MSRA) as Caffe2's MSRAFill: fan_out.
_OFFICIAL_INIT = nn.initializers.normal(stddev=0.01)
_HE_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_HE_FAN_IN_INIT = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


class Affine(nn.Module):
  """A per-channel ``x * scale + bias``: the frozen BatchNorm of the official 'affine' models.

  Attributes:
    scale_init: initialiser of ``scale`` (C,).
    bias_init: initialiser of ``bias`` (C,).
    dtype: compute dtype.
  """
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    scale = self.param('scale', self.scale_init, (channels,), jnp.float32)
    bias = self.param('bias', self.bias_init, (channels,), jnp.float32)
    dtype = self.dtype or x.dtype
    return x.astype(dtype) * scale.astype(dtype) + bias.astype(dtype)


def _antisymmetric(init):
  """``init`` for the (2·C', 1) concatenation kernel with its φ half the negated θ half: w_fᵀ[θ; φ] = vᵀ(θ - φ)."""
  def antisymmetric_init(key, shape, dtype=jnp.float32):
    half = init(key, (shape[0] // 2,) + tuple(shape[1:]), dtype)
    return jnp.concatenate([half, -half], axis=0)
  return antisymmetric_init


class ConcatProjection(nn.Module):
  """Holds w_f of the concatenation function, f = ReLU(w_fᵀ [θ(x_i), φ(x_j)]), as ``kernel`` (2·C', 1).

  Attributes:
    in_features: 2·C', the width of the concatenated [θ, φ].
    kernel_init: initialiser of the kernel.
  """
  in_features: int
  kernel_init: Any = _OFFICIAL_INIT

  @nn.compact
  def __call__(self):
    """Returns the kernel; the block applies it to θ and φ separately so no (N, N, 2·C') array exists."""
    return self.param('kernel', self.kernel_init, (self.in_features, 1), jnp.float32)


class NonLocalBlock(nn.Module):
  """Residual non-local block z = norm(W_z y) + x, with y from eq. (1) of the paper.

  Attributes:
    pairwise: a key of ``nonlocal_jax.layers.pairwise.PAIRWISE``: 'gaussian', 'embedded_gaussian', 'dot_product'
      or 'concatenation' (docs/paper.md §2).
    inter_channels: C', the width of θ, φ, g; defaults to C // 2 (the paper's bottleneck).
    subsample: max-pool window (= stride) over the non-channel axes of the key/value path, e.g. (1, 2, 2) for
      video or (2, 2) for images; None for no subsampling. Windows are applied with VALID padding.
    pool_position: 'before' pools x before the φ and g convs (official code, default); 'after' pools the
      outputs of φ and g (the paper's description).
    scale: multiply θᵀφ by C'^-0.5 before the softmax of the embedded Gaussian (official USE_SCALE).
    positions: for 3D input only: 'spacetime' (all positions, the default when None), 'space' (each frame
      attends within itself) or 'time' (each spatial location attends across frames); see
      ``nonlocal_jax.layers.geometry``.
    temporal_groups: for 3D input only: attend inside groups of this many consecutive frames (the official
      grouped non-local of the 128-frame models). None for no grouping.
    norm: 'batch' (BatchNorm after W_z, scale initialised to 0: the paper), 'affine' (a per-channel affine
      after a zero-initialised W_z: frozen-BN models), or 'none' (zero-initialised W_z only). None means
      'batch' for a block on its own; in a network it follows the network's norm ('batch', or 'affine' for
      frozen-BN networks).
    weight_init: 'official' (weights N(0, 0.01²), biases 0) or 'he' (He/MSRA normal, fan-out as Caffe2's
      MSRAFill, fan-in for the (2·C', 1) concatenation projection; biases 0).
    use_bias: whether θ, φ, g and W_z have biases (official: yes).
    bn_scale_init: initial BatchNorm scale γ after W_z (norm='batch'). 0 (the paper) makes the block the
      identity at initialisation, but then no gradient reaches θ, φ, g or W_z until γ moves; a non-zero
      value lets them learn from the first step (used where the label depends only on the interaction).
    tied_embedding_init: initialise φ with the same weights as θ (not the paper, which draws them
      independently), so that the learned pairwise functions start as functions of how x_i and x_j relate:
      θᵢᵀφⱼ = xᵢᵀWᵀWxⱼ is a positive semi-definite similarity (embedded Gaussian, dot product), and for the
      concatenation the φ half of w_f starts as the negated θ half, so w_fᵀ[θᵢ; φⱼ] = vᵀW(xᵢ - xⱼ) (zero for
      equal features). Independent random weights start from a random bilinear or additive form instead. All
      weights still train independently.
    bn_momentum: BatchNorm running-average momentum (running = m·running + (1-m)·batch).
    bn_epsilon: BatchNorm epsilon.
    bn_axis_name: mapped axis over which BatchNorm statistics are averaged (synchronised BN), or None.
    implementation: 'auto' | 'naive' | 'lean' | 'chunked' | 'reassociated' | 'fused' | 'cudnn'; see
      ``layers.attention`` ('auto': the device's measured table, else by size; 'cudnn' falls back where the
      backend refuses it).
    chunk_size: queries per block for the chunked implementation.
    pool_implementation: how ``subsample`` max-pools: 'auto', 'window' or 'slices' (``layers.pooling``: the same
      values; 'slices' differentiates without a scatter). In a network it follows the network's setting.
    max_affinity_bytes: 'auto' takes no path that holds the whole float32 affinity when it would exceed this many
      bytes; None: the device's budget (``attention_auto.affinity_budget``: 32 MiB on a CPU, 1/128 of an
      accelerator's memory).
    sow_attention: sow the (B·groups, N_query, N_key) attention weights into 'intermediates' when that
      collection is mutable; False keeps other layers' intermediates from paying for the N×N array.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32 and the softmax runs in float32.
  """
  pairwise: str = 'embedded_gaussian'
  inter_channels: Optional[int] = None
  subsample: Optional[Sequence[int]] = None
  pool_position: str = 'before'
  scale: bool = True
  positions: Optional[str] = None
  temporal_groups: Optional[int] = None
  norm: Optional[str] = None
  weight_init: str = 'official'
  use_bias: bool = True
  bn_scale_init: float = 0.0
  tied_embedding_init: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: Optional[str] = None
  implementation: str = 'auto'
  chunk_size: int = 256
  pool_implementation: str = 'auto'
  max_affinity_bytes: Optional[int] = None
  sow_attention: bool = True
  dtype: Any = None

  @nn.nowrap
  def check(self, input_rank: Optional[int] = None) -> None:
    """Validates the attributes, for inputs with ``input_rank`` non-channel axes (1, 2 or 3) when given.

    Networks call it when they are built, before any input exists; ``__call__`` calls it again with the input's
    rank and then checks what depends on the input's size. Errors name the attribute and what to use.
    """
    pairwise_lib.get(self.pairwise)
    attention.check_implementation(self.implementation, self.pairwise)
    for name, value, allowed in (('pool_position', self.pool_position, POOL_POSITIONS),
                                 ('weight_init', self.weight_init, INITS),
                                 ('positions', self.positions, (None,) + POSITION_SETS),
                                 ('norm', self.norm, (None,) + NORMS)):
      if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}.')
    if input_rank is not None and input_rank != 3:
      for name in ('positions', 'temporal_groups'):
        if getattr(self, name) is not None:
          raise ValueError(f'{name}={getattr(self, name)!r} applies to 3D input (B, T, H, W, C) only; leave it None '
                           f'for {input_rank}D input.')
    if self.inter_channels is not None and (not isinstance(self.inter_channels, int) or self.inter_channels < 1):
      raise ValueError(f'inter_channels must be a positive integer or None, got {self.inter_channels!r}.')
    if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
      raise ValueError(f'chunk_size must be a positive integer, got {self.chunk_size!r}.')
    if self.max_affinity_bytes is not None and (not isinstance(self.max_affinity_bytes, int)
                                                or self.max_affinity_bytes < 1):
      raise ValueError(f'max_affinity_bytes must be a positive integer (bytes) or None (the device\'s budget), got '
                       f'{self.max_affinity_bytes!r}.')
    pooling.check(self.pool_implementation)
    window = self._window()
    if any(w < 1 for w in window):
      raise ValueError(f'subsample must be a window of positive integers, one per non-channel axis (e.g. '
                       f'(1, 2, 2) for video, (2, 2) for images), or None; got {self.subsample!r}.')
    if input_rank is not None and window and len(window) != input_rank:
      raise ValueError(f'subsample must be a window of {input_rank} positive integers for {input_rank}D input '
                       f'(one per non-channel axis, e.g. {(1, 2, 2)[-input_rank:]}); got {self.subsample!r}.')
    pooled = window and any(w != 1 for w in window)
    positions = self.positions or 'spacetime'
    if pooled and positions == 'space' and window[0] != 1:
      raise ValueError(f"positions='space' attends within each frame, so subsample must not pool time; got "
                       f'{window}. Use a window like (1, 2, 2).')
    if pooled and positions == 'time' and any(w != 1 for w in window[1:]):
      raise ValueError(f"positions='time' attends across frames at each location, so subsample must not pool "
                       f'space; got {window}. Use a window like (2, 1, 1) or None.')
    if self.temporal_groups is not None:
      if not isinstance(self.temporal_groups, int) or self.temporal_groups < 1:
        raise ValueError(f'temporal_groups must be a positive integer or None, got {self.temporal_groups!r}.')
      if positions != 'spacetime':
        raise ValueError(f"temporal_groups needs positions='spacetime' (or None), got {self.positions!r}.")
      if pooled and window[0] != 1:
        raise ValueError(f'temporal_groups needs a subsample window that does not pool time, got {window}.')

  @nn.nowrap
  def _window(self) -> Tuple[int, ...]:
    """The subsampling window as integers, () for none."""
    return tuple(int(w) for w in self.subsample) if self.subsample is not None else ()

  def _check_input(self, x) -> Tuple[int, ...]:
    """Validates the attributes against the input; returns the pooling window, () when it pools nothing."""
    if x.ndim not in (3, 4, 5):
      raise ValueError(f'NonLocalBlock expects channels-last input of rank 3, 4 or 5 ((B, L, C), (B, H, W, C) or '
                       f'(B, T, H, W, C)); got shape {tuple(x.shape)}.')
    self.check(x.ndim - 2)
    spatial = tuple(x.shape[1:-1])
    window = self._window()
    if any(w > s for w, s in zip(window, spatial)):
      raise ValueError(f'subsample window {window} does not fit the input positions {spatial}: use a smaller '
                       'window or subsample=None.')
    if self.temporal_groups is not None and x.shape[1] % self.temporal_groups:
      raise ValueError(f'temporal_groups={self.temporal_groups!r} must be a positive divisor of the number of '
                       f'frames {x.shape[1]}.')
    return () if all(w == 1 for w in window) else window

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Applies the block; ``train`` selects batch statistics (True) or running statistics for BatchNorm."""
    window = self._check_input(x)
    function = pairwise_lib.get(self.pairwise)
    sets = PositionSets(self.positions or 'spacetime', self.temporal_groups)
    norm = self.norm or 'batch'
    channels = x.shape[-1]
    inter = self.inter_channels or max(1, channels // 2)
    dtype = self.dtype or x.dtype
    kernel_init = _OFFICIAL_INIT if self.weight_init == 'official' else _HE_INIT
    dense = lambda features, name, k_init=kernel_init: nn.Dense(
        features, use_bias=self.use_bias, kernel_init=k_init, bias_init=nn.initializers.zeros,
        dtype=dtype, param_dtype=jnp.float32, name=name)
    pool = lambda t: pooling.max_pool(t, window, window, 'VALID', self.pool_implementation) if window else t

    # Key/value path: official code pools x, then convolves; the paper convolves, then pools.
    kv_input = pool(x) if self.pool_position == 'before' else x
    if not function.embedded:
      # θ and φ are the identity: f(x_i, x_j) = exp(x_iᵀ x_j).
      q, k = x.astype(dtype), kv_input.astype(dtype)
    else:
      embed_init = kernel_init
      if self.tied_embedding_init and self.is_initializing():
        # One key for both kernels: the same draw, whatever key each name would have been given.
        shared_key = self.make_rng('params')
        embed_init = lambda _, shape, dtype=jnp.float32: kernel_init(shared_key, shape, dtype)
      q = dense(inter, 'theta', embed_init)(x)
      k = dense(inter, 'phi', embed_init)(kv_input)
    v = dense(inter, 'g')(kv_input)
    if self.pool_position == 'after':
      k, v = pool(k), pool(v)

    q_shape = q.shape[:-1] + (inter,)
    qg, kg, vg = (sets.fold(t) for t in (q, k, v))
    w_f = None
    if function.concat_projection:
      # He with fan-out would give this (2·C' -> 1) projection std √2, far above θ's; fan-in keeps it in scale.
      concat_init = kernel_init if self.weight_init == 'official' else _HE_FAN_IN_INIT
      if self.tied_embedding_init:
        concat_init = _antisymmetric(concat_init)
      w_f = ConcatProjection(2 * inter, concat_init, name='concat_project')()
    logit_scale = inter ** -0.5 if (self.scale and function.scalable) else 1.0

    if self.sow_attention and self.is_mutable_collection('intermediates'):
      weights = pairwise_lib.pairwise_weights(self.pairwise, qg, kg, logit_scale=logit_scale, concat_kernel=w_f)
      self.sow('intermediates', 'attention', weights)

    impl = attention.resolve_implementation(self.implementation, self.pairwise, qg.shape[0], qg.shape[1],
                                            kg.shape[1], inter, self.max_affinity_bytes, dtype=qg.dtype,
                                            query_dim=qg.shape[-1])
    y = attention.nonlocal_attention(self.pairwise, qg, kg, vg, implementation=impl, logit_scale=logit_scale,
                                     concat_kernel=w_f, chunk_size=self.chunk_size)
    y = sets.unfold(y, q_shape)

    out_init = kernel_init if norm == 'batch' else nn.initializers.zeros
    wz = dense(channels, 'out', out_init)(y)
    if norm == 'batch':
      # Two-pass variance: W_z y averages over many positions, so its channel means dwarf its spread and the
      # one-pass E[v²] - E[v]² (Flax's default) loses several float32 digits there.
      wz = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                        scale_init=nn.initializers.constant(self.bn_scale_init), axis_name=self.bn_axis_name,
                        dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name='bn')(wz)
    elif norm == 'affine':
      wz = Affine(dtype=dtype, name='bn')(wz)
    return (wz + x.astype(dtype)).astype(dtype)
