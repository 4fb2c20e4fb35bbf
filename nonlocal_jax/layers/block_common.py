"""What the non-local family's blocks (GC, APNB, CC) share with ``NonLocalBlock``: initialisers, argument checks.

The conventions are the non-local block's: weight_init 'official' is N(0, 0.01²) (the non-local block's official
code), 'he' is He/MSRA normal with fan-out (Caffe2's MSRAFill); biases start at 0; errors name the argument.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nonlocal_jax.layers.nonlocal_block import INITS, NORMS, Affine

# The same draws as NonLocalBlock's: N(0, 0.01²) and MSRAFill (fan-out).
OFFICIAL_INIT = nn.initializers.normal(stddev=0.01)
HE_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# For a projection to one channel (GC's W_k: C -> 1), fan-out would give std √2 and one-hot softmaxes.
HE_FAN_IN_INIT = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def kernel_init(weight_init: str):
  """The initialiser of a 1×1 convolution's kernel for ``weight_init`` ('official' or 'he')."""
  return OFFICIAL_INIT if weight_init == 'official' else HE_INIT


def check_one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
  """Raises a ValueError naming ``name`` unless ``value`` is among ``allowed``."""
  if value not in allowed:
    raise ValueError(f'{name} must be one of {tuple(allowed)}, got {value!r}.')


def check_positive_int(name: str, value: Any, optional: bool = False) -> None:
  """Raises a ValueError naming ``name`` unless ``value`` is a positive integer (or None when ``optional``)."""
  if optional and value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'{name} must be a positive integer{" or None" if optional else ""}, got {value!r}.')


def check_common(block: Any) -> None:
  """Checks the fields the family shares with NonLocalBlock, when the block has them."""
  if hasattr(block, 'weight_init'):
    check_one_of('weight_init', block.weight_init, INITS)
  if hasattr(block, 'norm'):
    check_one_of('norm', block.norm, (None,) + NORMS)
  if hasattr(block, 'inter_channels'):
    check_positive_int('inter_channels', block.inter_channels, optional=True)


def check_input_rank(block_name: str, x: Any, ranks: Sequence[int] = (1, 2, 3)) -> int:
  """The number of non-channel axes of channels-last ``x``; a ValueError names the shapes accepted."""
  shapes = {1: '(B, L, C)', 2: '(B, H, W, C)', 3: '(B, T, H, W, C)'}
  if x.ndim - 2 not in ranks:
    allowed = ', '.join(shapes[r] for r in ranks)
    raise ValueError(f'{block_name} expects channels-last input of rank {", ".join(str(r + 2) for r in ranks)} '
                     f'({allowed}); got shape {tuple(x.shape)}.')
  return x.ndim - 2


def output_norm(norm: str, *, train: bool, scale_init: float, momentum: float, epsilon: float,
                axis_name: Optional[str], dtype: Any):
  """The module after W_z, named 'bn' as in NonLocalBlock: BatchNorm (γ = ``scale_init``), an affine, or None."""
  if norm == 'batch':
    # Two-pass variance, as NonLocalBlock: the channel means of W_z y can dwarf its spread.
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        scale_init=nn.initializers.constant(scale_init), axis_name=axis_name, dtype=dtype,
                        param_dtype=jnp.float32, use_fast_variance=False, name='bn')
  if norm == 'affine':
    return Affine(dtype=dtype, name='bn')
  return None
