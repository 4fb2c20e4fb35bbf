"""Max pooling with a backward pass that needs no scatter.

``flax.linen.max_pool`` lowers to XLA's ``reduce_window``, whose gradient is ``select_and_scatter``: on the H200 it
took 14 % of the kernel time of a C2D + 5 NL train step (bench/results/nvidia-h200/device.md). Max pooling is
separable, so 'slices' pools one axis at a time, each as the running maximum of the window's strided slices of
the (-inf padded) input, keeping which slice won (an int8 per output). Its gradient sends each output's gradient
to the winning slice and puts the slices back with interior-padded pads: elementwise work that XLA fuses, and no
scatter.

The values are those of ``reduce_window``, NaNs included. The gradient goes, as ``reduce_window``'s, to one
position of each window; among tied maxima it is the first along each axis in turn, so where ties straddle two
axes the position chosen may differ from ``reduce_window``'s (in the networks here every pool follows a ReLU, so
ties are zeros, whose gradient the ReLU stops). Which slice won is recorded in the forward pass rather than
found again by comparing values in the backward pass: a comparison would depend on XLA computing the pooled
input bit for bit alike in both passes, which fusion does not promise.

    y = max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)), implementation='slices')
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import attention_auto

# 'window': XLA's reduce_window (flax.linen.max_pool); 'slices': strided slices, one axis at a time; 'auto': in a
# video network, what the device's table measured fastest for its kind (``attention_auto.measured_formulation``,
# written by bench/device.py), else 'window'. On the CPU (no table) the pools alone are 2.5-17x faster as 'slices'
# (bench/results/pooling.md) but the R50 + 5 NL train steps take the same time either way (within 4 %,
# bench/results/models_pools.md), so 'window' keeps the CPU's runs (and the README's figures) bit for bit.
POOL_IMPLEMENTATIONS = ('auto', 'window', 'slices')


def check(implementation: str) -> None:
  """Raises a ValueError naming ``pool_implementation`` unless it is one of ``POOL_IMPLEMENTATIONS`` (without
  touching the device: configs are checked before a multi-host run initialises JAX)."""
  if implementation not in POOL_IMPLEMENTATIONS:
    raise ValueError(f'pool_implementation must be one of {POOL_IMPLEMENTATIONS}, got {implementation!r}.')


def resolve(implementation: str, network: Optional[str] = None) -> str:
  """The concrete implementation ('window' or 'slices') that ``implementation`` stands for on the default device,
  in a network of kind ``network`` ('c2d', 'i3d'; None for a layer on its own)."""
  check(implementation)
  if implementation == 'auto':
    return attention_auto.measured_formulation('pool_implementation', network) or 'window'
  return implementation


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[Tuple[int, int]] | str = 'VALID', implementation: str = 'auto') -> jax.Array:
  """Max pooling of channels-last ``x`` (B, *spatial, C) over its spatial axes.

  Args:
    x: (B, *spatial, C).
    window, strides: one integer per spatial axis.
    padding: 'VALID' or one (lo, hi) pair per spatial axis; padded positions never win (they hold -inf).
    implementation: see ``POOL_IMPLEMENTATIONS``.

  Returns:
    (B, *spatial', C), as ``flax.linen.max_pool`` returns it.
  """
  window, strides = tuple(int(w) for w in window), tuple(int(s) for s in strides)
  rank = x.ndim - 2
  if len(window) != rank or len(strides) != rank:
    raise ValueError(f'max_pool needs one window size and one stride per spatial axis ({rank}), got window '
                     f'{window} and strides {strides}.')
  pads = ((0, 0),) * rank if padding == 'VALID' else tuple((int(lo), int(hi)) for lo, hi in padding)
  if resolve(implementation) == 'window':
    return nn.max_pool(x, window, strides, padding=padding if padding == 'VALID' else pads)
  for axis, (w, s, pad) in enumerate(zip(window, strides, pads), start=1):
    if (w, s, pad) != (1, 1, (0, 0)):
      if x.shape[axis] + sum(pad) < w:
        raise ValueError(f'max_pool window {w} is larger than the padded axis {axis} ({x.shape[axis] + sum(pad)}).')
      x = _max_along(x, axis, w, s, pad, x.shape[axis])
  return x


def _taps(x, axis, window, stride, pad):
  """The ``window`` strided slices of the -inf padded ``x`` along ``axis`` whose running maximum is the pool."""
  if pad != (0, 0):
    widths = [(0, 0)] * x.ndim
    widths[axis] = pad
    x = jnp.pad(x, widths, constant_values=-jnp.inf)
  n_out = (x.shape[axis] - window) // stride + 1
  return [jax.lax.slice_in_dim(x, d, d + stride * (n_out - 1) + 1, stride, axis) for d in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _max_along(x, axis, window, stride, pad, length):
  """Max pooling along one axis (see the module docstring); ``length`` is x's along it, static for the backward
  pass."""
  return _max_along_fwd(x, axis, window, stride, pad, length)[0]


def _max_along_fwd(x, axis, window, stride, pad, length):
  del length
  taps = _taps(x, axis, window, stride, pad)
  best, winner = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for d, tap in enumerate(taps[1:], start=1):
    # Strictly greater keeps the first of tied maxima, as reduce_window does; a NaN wins, so it propagates.
    better = (tap > best) | jnp.isnan(tap)
    best, winner = jnp.where(better, tap, best), jnp.where(better, jnp.int8(d), winner)
  return best, winner


def _max_along_bwd(axis, window, stride, pad, length, winner, g):
  n_out = g.shape[axis]
  padded = length + pad[0] + pad[1]
  zero = jnp.zeros((), g.dtype)
  total = None
  for d in range(window):
    # The transpose of the strided slice that started at d: the gradient spread with stride - 1 zeros between.
    config = [(0, 0, 0)] * g.ndim
    config[axis] = (d - pad[0], padded - pad[1] - (d + stride * (n_out - 1) + 1), stride - 1)
    part = jax.lax.pad(jnp.where(winner == d, g, zero), zero, config)
    total = part if total is None else total + part
  return (total,)


_max_along.defvjp(_max_along_fwd, _max_along_bwd)
