"""The global-context (GC) block of Cao et al., *GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
Beyond* (2019), for 1D, 2D and 3D inputs (docs/family.md §1).

One attention map for all queries (the paper's observation that the non-local block's maps hardly depend on the
query), pooled into one context vector, passed through a bottleneck transform and added to every position:

    α_j = exp(W_k x_j) / Σ_m exp(W_k x_m)                     context modelling (softmax over all positions)
    z_i = x_i + W_v2 ReLU(LN(W_v1 Σ_j α_j x_j))               the GC block (eq. 4 of arXiv 1904.11492)

Cost O(N·C) instead of the non-local block's O(N²·C'); the same vector is added at every position, so a GC block
cannot make what it adds at x_i depend on x_i (see docs/family.md).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import block_common


class GCBlock(nn.Module):
  """Residual GC block z = x + W_v2 ReLU(LN(W_v1 Σ_j softmax_j(W_k x_j) x_j)); channels-last, any rank 1-3.

  Parameters (stable names; every 1×1(×1) convolution is a ``Dense`` kernel (C_in, C_out)):

    mask/kernel                  W_k: C -> 1, no bias (a bias would cancel in the softmax)
    bottleneck/kernel, /bias     W_v1: C -> C // reduction
    ln/scale, ln/bias            the LayerNorm over the bottleneck channels
    expand/kernel, /bias         W_v2: C // reduction -> C, zero at initialisation (GCNet's zero-init of the
                                 last layer), so the block is the identity at initialisation

  The softmax runs in float32 whatever ``dtype``. The attention map (B, N) is sown into 'intermediates' as
  'attention' when that collection is mutable and ``sow_attention``.

  Attributes:
    reduction: bottleneck ratio r: W_v1 maps C to max(1, C // r) channels (GCNet: 16, also 4).
    weight_init: 'official' (N(0, 0.01²), as the non-local block's official code) or 'he' (He normal: fan-in
      for W_k, as GCNet's code, fan-out for W_v1); biases start at 0 and W_v2 at 0.
    use_bias: whether W_v1 and W_v2 have biases (GCNet: yes).
    ln_epsilon: the LayerNorm epsilon (PyTorch's default, GCNet's).
    sow_attention: sow the attention map when 'intermediates' is mutable.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32 and the softmax runs in float32.
  """
  reduction: int = 16
  weight_init: str = 'official'
  use_bias: bool = True
  ln_epsilon: float = 1e-5
  sow_attention: bool = True
  dtype: Any = None

  @nn.nowrap
  def check(self, input_rank: Optional[int] = None) -> None:
    """Validates the attributes (for inputs with ``input_rank`` non-channel axes when given); errors name them."""
    block_common.check_common(self)
    block_common.check_positive_int('reduction', self.reduction)
    if not (isinstance(self.ln_epsilon, (int, float)) and self.ln_epsilon > 0):
      raise ValueError(f'ln_epsilon must be a positive number, got {self.ln_epsilon!r}.')
    if input_rank is not None and input_rank not in (1, 2, 3):
      raise ValueError(f'GCBlock takes 1D, 2D or 3D inputs (input_rank 1, 2 or 3), got input_rank={input_rank!r}.')

  @nn.nowrap
  def attention_macs(self, input_shape: Sequence[int]) -> int:
    """Multiply-adds of Σ_j α_j x_j (the 1×1 convolutions are counted as Dense layers by the summary)."""
    b, *spatial, c = (int(s) for s in input_shape)
    n = 1
    for s in spatial:
      n *= s
    return b * n * c

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Applies the block; ``train`` is accepted for the family's common call and changes nothing here."""
    del train
    block_common.check_input_rank('GCBlock', x)
    self.check(x.ndim - 2)
    dtype = self.dtype or x.dtype
    channels = x.shape[-1]
    width = max(1, channels // self.reduction)
    init = block_common.kernel_init(self.weight_init)
    xs = x.astype(dtype).reshape(x.shape[0], -1, channels)  # (B, N, C)

    # He with fan-out would give W_k (C -> 1) std √2 and a one-hot softmax; fan-in, as GCNet's code.
    mask_init = init if self.weight_init == 'official' else block_common.HE_FAN_IN_INIT
    logits = nn.Dense(1, use_bias=False, kernel_init=mask_init, dtype=dtype, param_dtype=jnp.float32,
                      name='mask')(xs)
    weights = jax.nn.softmax(logits[..., 0].astype(jnp.float32), axis=-1)  # (B, N), float32
    if self.sow_attention and self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'attention', weights)
    context = jnp.einsum('bn,bnc->bc', weights.astype(dtype), xs, preferred_element_type=jnp.float32).astype(dtype)

    h = nn.Dense(width, use_bias=self.use_bias, kernel_init=init, bias_init=nn.initializers.zeros, dtype=dtype,
                 param_dtype=jnp.float32, name='bottleneck')(context)
    h = nn.LayerNorm(epsilon=self.ln_epsilon, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False,
                     name='ln')(h)
    h = nn.relu(h)
    delta = nn.Dense(channels, use_bias=self.use_bias, kernel_init=nn.initializers.zeros,
                     bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=jnp.float32, name='expand')(h)
    delta = delta.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (channels,))
    return (x.astype(dtype) + delta).astype(dtype)
