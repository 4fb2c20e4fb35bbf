"""What the video and image ResNets share: the non-local options, normalisation, residual stages and the head."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import NonLocalBlock, PAIRWISE_FUNCTIONS
from nonlocal_jax.layers.nonlocal_block import INITS as NONLOCAL_INITS
from nonlocal_jax.layers.nonlocal_block import NORMS as NONLOCAL_NORMS
from nonlocal_jax.layers.nonlocal_block import POOL_POSITIONS
from nonlocal_jax.layers.attention import IMPLEMENTATIONS
from nonlocal_jax.models import blocks
from nonlocal_jax.models.placement import resolve_nonlocal_locations


def check_one_of(field: str, value: Any, allowed: Sequence[Any]) -> None:
  """Raises a ValueError naming ``field`` unless ``value`` is among ``allowed``."""
  if value not in allowed:
    raise ValueError(f'{field} must be one of {tuple(allowed)}, got {value!r}.')


class ResNetBase(nn.Module):
  """Fields and helpers common to ``ResNetVideo`` and ``ResNetImage`` (see their docstrings)."""
  num_classes: int = 400
  depth: int = 50
  stage_sizes: Optional[Sequence[int]] = None
  width: Optional[int] = None
  stride_in_1x1: bool = False
  nonlocal_locations: Any = 'none'
  nonlocal_pairwise: str = 'embedded_gaussian'
  nonlocal_subsample: Optional[Sequence[int]] = None
  nonlocal_pool_position: str = 'before'
  nonlocal_scale: bool = True
  nonlocal_norm: Optional[str] = None
  nonlocal_weight_init: str = 'official'
  nonlocal_use_bias: bool = True
  nonlocal_bn_scale_init: float = 0.0
  nonlocal_tied_embedding_init: bool = False
  nonlocal_implementation: str = 'auto'
  nonlocal_chunk_size: int = 512
  nonlocal_max_affinity_bytes: int = 32 * 2**20
  norm: str = 'batch'
  bn_axis_name: Optional[str] = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  residual_bn_init: float = 1.0
  dropout_rate: float = 0.5
  conv_implementation: str = 'auto'
  dtype: Any = jnp.float32

  # --- derived structure, overridden by the subclasses -------------------------------------------------------
  @nn.nowrap
  def resolved_stage_sizes(self) -> Tuple[int, ...]:
    """Residual blocks per stage, res2 first."""
    raise NotImplementedError

  @nn.nowrap
  def resolved_width(self) -> int:
    """Width of the stem and of the first stage's bottleneck."""
    raise NotImplementedError

  @nn.nowrap
  def placement(self) -> Tuple[Tuple[int, ...], ...]:
    """Per stage (res2 first), the indices of the residual blocks followed by a non-local block."""
    return resolve_nonlocal_locations(self.nonlocal_locations, self.resolved_stage_sizes())

  @nn.nowrap
  def num_nonlocal_blocks(self) -> int:
    """How many non-local blocks the network holds."""
    return sum(len(p) for p in self.placement())

  @nn.nowrap
  def _check_common(self) -> None:
    """Validates the shared fields; each error names the config field to fix."""
    if not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f'num_classes must be a positive integer, got {self.num_classes!r}.')
    sizes = self.resolved_stage_sizes()
    if not sizes or any(int(n) < 1 for n in sizes):
      raise ValueError(f'stage_sizes must be positive block counts, one per stage, got {sizes!r}.')
    if self.resolved_width() < 1:
      raise ValueError(f'width must be a positive integer, got {self.width!r}.')
    check_one_of('norm', self.norm, blocks.NORMS)
    check_one_of('conv_implementation', self.conv_implementation, blocks.CONV_IMPLEMENTATIONS)
    check_one_of('nonlocal_pairwise', self.nonlocal_pairwise, PAIRWISE_FUNCTIONS)
    check_one_of('nonlocal_pool_position', self.nonlocal_pool_position, POOL_POSITIONS)
    check_one_of('nonlocal_weight_init', self.nonlocal_weight_init, NONLOCAL_INITS)
    check_one_of('nonlocal_implementation', self.nonlocal_implementation, IMPLEMENTATIONS)
    if self.nonlocal_norm is not None:
      check_one_of('nonlocal_norm', self.nonlocal_norm, NONLOCAL_NORMS)
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'dropout_rate must be in [0, 1), got {self.dropout_rate!r}.')
    self.placement()

  # --- building pieces ---------------------------------------------------------------------------------------
  def _conv(self):
    return blocks.conv_factory(self.dtype, self.conv_implementation)

  def _norm(self, train: bool):
    return blocks.norm_factory(self.norm, train=train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                               axis_name=self.bn_axis_name, dtype=self.dtype)

  def _nonlocal_block(self, stage: int, index: int, **extra) -> NonLocalBlock:
    """The non-local block after residual block ``index`` of res{stage}, named as the official blob prefix."""
    norm = self.nonlocal_norm or ('batch' if self.norm == 'batch' else 'affine')
    subsample = tuple(self.nonlocal_subsample) if self.nonlocal_subsample is not None else None
    return NonLocalBlock(
        pairwise=self.nonlocal_pairwise, subsample=subsample, pool_position=self.nonlocal_pool_position,
        scale=self.nonlocal_scale, norm=norm, weight_init=self.nonlocal_weight_init,
        use_bias=self.nonlocal_use_bias, bn_scale_init=self.nonlocal_bn_scale_init,
        tied_embedding_init=self.nonlocal_tied_embedding_init, bn_momentum=self.bn_momentum,
        bn_epsilon=self.bn_epsilon, bn_axis_name=self.bn_axis_name, implementation=self.nonlocal_implementation,
        chunk_size=self.nonlocal_chunk_size, max_affinity_bytes=self.nonlocal_max_affinity_bytes,
        dtype=self.dtype, name=f'nonlocal_conv{stage}_{index}', **extra)

  def _stage(self, x, stage: int, make_block, nonlocal_after: Sequence[int], train: bool, **nonlocal_extra):
    """Runs residual stage res{stage}: ``make_block(index)`` builds block i; non-local blocks follow some."""
    for i in range(self.resolved_stage_sizes()[stage - 2]):
      x = make_block(i)(x)
      if i in nonlocal_after:
        x = self._nonlocal_block(stage, i, **nonlocal_extra)(x, train=train)
    self.sow('intermediates', f'res{stage}_out', x)
    return x

  def _classify(self, x, train: bool):
    """Global average pool, dropout, fc ('pred'): (B, *positions, C) -> (B, num_classes) float32 logits."""
    pooled = jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))
    self.sow('intermediates', 'pool5_out', pooled)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)(pooled)
    logits = self._pred()(pooled.astype(self.dtype))
    return logits.astype(jnp.float32)

  def _pred(self) -> nn.Dense:
    return nn.Dense(self.num_classes, kernel_init=blocks.FC_INIT, bias_init=nn.initializers.zeros,
                    dtype=self.dtype, param_dtype=jnp.float32, name='pred')


def softmax_over_positions(logits) -> jax.Array:
  """(B, *positions, K) logits -> (B, K): the softmax at every position, averaged over positions, in float32."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.mean(probs, axis=tuple(range(1, logits.ndim - 1)))
