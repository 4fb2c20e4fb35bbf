"""The criss-cross attention block of Huang et al., *CCNet: Criss-Cross Attention for Semantic Segmentation*
(ICCV 2019), for 1D, 2D and 3D inputs (docs/family.md §3).

Each position u attends to the positions that share all but one of its coordinates: its column and its row in
2D, plus its time line in 3D (the line along each axis through u). With Q, K (C -> C') and V (C -> C):

    d_{i,u} = Q_u · K_{Ω_u(i)}                        the affinity (CCNet eq. 1), i over the criss-cross Ω_u
    A_u = softmax_i(d_{·,u})                          one softmax over all of Ω_u jointly
    H'_u = H_u + γ Σ_i A_{i,u} V_{Ω_u(i)}             the aggregation (eq. 2) with the official code's γ

Ω_u holds u itself ONCE: the lines through u all contain u, and (as the official code's -inf on the diagonal of
the column energies) it is counted in the first axis's line only, so |Ω_u| = H + W - 1 in 2D and
T + H + W - 2 in 3D. In 1D the only line is the whole sequence, so the block is full attention there.
The module is applied ``recurrence`` times (CCNet's R = 2) with the same Q, K, V and γ. Each step moves along one
line, so R steps connect positions that differ in at most R coordinates: R = 2 connects any two positions of a 2D
map, but in 3D a position in another frame, row and column is three lines away (R = 3). γ starts at 0: the block
is the identity at initialisation.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import block_common


def _line_logits(q, k, axis: int):
  """Q_u · K_v for every v on the line through u along non-channel ``axis`` (0-based): (B, *positions, L)."""
  dims = 'ijk'[:q.ndim - 2]  # batch y, channels c, the line z
  key_dims = dims[:axis] + 'z' + dims[axis + 1:]
  return jnp.einsum(f'y{dims}c,y{key_dims}c->y{dims}z', q, k, preferred_element_type=jnp.float32)


def _line_aggregate(weights, v, axis: int):
  """Σ_v A_{u,v} V_v over the line through u along ``axis``: (B, *positions, C)."""
  dims = 'ijk'[:v.ndim - 2]
  key_dims = dims[:axis] + 'z' + dims[axis + 1:]
  return jnp.einsum(f'y{dims}z,y{key_dims}c->y{dims}c', weights, v, preferred_element_type=jnp.float32)


def _self_mask(shape: Sequence[int], axis: int):
  """True where the key on the line along ``axis`` is the query itself, broadcastable to (B, *positions, L)."""
  n = shape[axis + 1]
  eye = jnp.arange(n)[:, None] == jnp.arange(n)[None, :]
  mask_shape = [1] * (len(shape) - 1) + [n]
  mask_shape[axis + 1] = n
  return eye.reshape(mask_shape)


def criss_cross_attention(q, k, v):
  """One criss-cross step (no γ, no residual): Σ_i A_{i,u} V_{Ω_u(i)}, and the weights A (B, *positions, Σ L).

  The softmax runs jointly over the lines' concatenated logits in float32; u is masked out of every line but
  the first, so it is counted once.
  """
  logits = []
  for axis in range(q.ndim - 2):
    l = _line_logits(q, k, axis)
    logits.append(l if axis == 0 else jnp.where(_self_mask(q.shape, axis), -jnp.inf, l))
  weights = jax.nn.softmax(jnp.concatenate(logits, axis=-1), axis=-1)
  out, start = 0.0, 0
  for axis in range(q.ndim - 2):
    n = q.shape[axis + 1]
    out = out + _line_aggregate(weights[..., start:start + n].astype(v.dtype), v, axis)
    start += n
  return out.astype(v.dtype), weights


class CrissCrossBlock(nn.Module):
  """CCNet's recurrent criss-cross attention: ``recurrence`` times x <- x + γ·CCA(x), shared weights.

  Parameters (stable names; every 1×1(×1) convolution is a ``Dense`` kernel (C_in, C_out)):

    query/kernel, query/bias     Q: C -> C'
    key/kernel, key/bias         K: C -> C'
    value/kernel, value/bias     V: C -> C (full width, as CCNet)
    gamma                        γ, a scalar, ``gamma_init`` (0) at initialisation

  The softmax runs in float32 whatever ``dtype``. With 'intermediates' mutable and ``sow_attention``, each step
  sows its weights (B, *positions, Σ_axes L) as 'attention': per position, the weights over the line along
  the first axis, then over the next axis's line, ...; the query's own entry in the later lines holds 0.

  Attributes:
    inter_channels: C', the width of Q and K; None: max(1, C // 8) (CCNet's reduction).
    recurrence: R, the number of criss-cross steps with the same weights (CCNet: 2; 1 is one step).
    gamma_init: the initial γ; 0 makes the block the identity at initialisation (then only γ gets a gradient
      at the first step).
    weight_init: 'official' (N(0, 0.01²), as the non-local block's official code) or 'he' (He normal,
      fan-out) for Q, K, V; biases start at 0.
    use_bias: whether Q, K and V have biases (CCNet: yes).
    sow_attention: sow the attention weights when 'intermediates' is mutable.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32 and the softmax runs in float32.
  """
  inter_channels: Optional[int] = None
  recurrence: int = 2
  gamma_init: float = 0.0
  weight_init: str = 'official'
  use_bias: bool = True
  sow_attention: bool = True
  dtype: Any = None

  @nn.nowrap
  def check(self, input_rank: Optional[int] = None) -> None:
    """Validates the attributes (for inputs with ``input_rank`` non-channel axes when given); errors name them."""
    block_common.check_common(self)
    block_common.check_positive_int('recurrence', self.recurrence)
    if not isinstance(self.gamma_init, (int, float)) or isinstance(self.gamma_init, bool):
      raise ValueError(f'gamma_init must be a number, got {self.gamma_init!r}.')
    if input_rank is not None and input_rank not in (1, 2, 3):
      raise ValueError(f'CrissCrossBlock takes 1D, 2D or 3D inputs (input_rank 1, 2 or 3), got '
                       f'input_rank={input_rank!r}.')

  @nn.nowrap
  def attention_macs(self, input_shape: Sequence[int]) -> int:
    """Multiply-adds of the affinities and aggregations of all steps, as computed: each position meets the
    Σ_axes L keys of its lines (its own entry in the later lines is computed, then masked). The 1×1
    convolutions are counted as Dense layers by the summary, once per step."""
    b, *spatial, c = (int(s) for s in input_shape)
    inter = self.inter_channels or max(1, c // 8)
    n = 1
    for s in spatial:
      n *= s
    return self.recurrence * b * n * sum(spatial) * (inter + c)

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Applies the block; ``train`` is accepted for the family's common call and changes nothing here."""
    del train
    block_common.check_input_rank('CrissCrossBlock', x)
    self.check(x.ndim - 2)
    dtype = self.dtype or x.dtype
    channels = x.shape[-1]
    inter = self.inter_channels or max(1, channels // 8)
    init = block_common.kernel_init(self.weight_init)
    dense = lambda features, name: nn.Dense(features, use_bias=self.use_bias, kernel_init=init,
                                            bias_init=nn.initializers.zeros, dtype=dtype,
                                            param_dtype=jnp.float32, name=name)
    query, key, value = dense(inter, 'query'), dense(inter, 'key'), dense(channels, 'value')
    gamma = self.param('gamma', nn.initializers.constant(self.gamma_init), (), jnp.float32)
    h = x.astype(dtype)
    for _ in range(self.recurrence):
      out, weights = criss_cross_attention(query(h), key(h), value(h))
      if self.sow_attention and self.is_mutable_collection('intermediates'):
        self.sow('intermediates', 'attention', weights)
      h = (h + gamma.astype(dtype) * out).astype(dtype)
    return h
