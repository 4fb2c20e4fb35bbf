"""BatchNorm, optionally followed by ReLU, with a hand-written backward pass: flax's ``nn.BatchNorm`` in fewer
passes over the activations.

Training with batch statistics, BatchNorm is y = (x - μ) · γ/√(σ² + ε) + β with μ, σ² the batch's per-channel
mean and variance. Its gradient needs two per-channel sums of the incoming gradient g, Σg and Σg·x̂
(x̂ = (x - μ)/√(σ² + ε)), and then one elementwise pass:

    ∂x = γ/(N√(σ² + ε)) · (N·g - Σg - x̂·Σg·x̂),   ∂γ = Σg·x̂,   ∂β = Σg.

Differentiated automatically, XLA:GPU computes these sums in several reductions and writes float32
intermediates the size of the activations between them; written out, they are one reduction and one elementwise
pass, reading the bf16 activations. ReLU is folded in (``relu=True``), so that its backward mask is recomputed
in both passes instead of written out. Compiled for an H200 (``python -m bench.gpu_compile``: R50 C2D + 5 NL,
bf16, folded convolutions, sliced pools), the step's fusions fall from 1,125 to 1,025 and the bytes they move
from 17.3 to 16.7 GB.

The forward pass computes what ``nn.BatchNorm`` computes, operation for operation (its values are identical), with
the same variables (params ``scale``, ``bias``; batch_stats ``mean``, ``var``) and running-average update. Only
per-device statistics: synchronised BN (``axis_name``) stays with ``nn.BatchNorm`` (``resolve``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from nonlocal_jax.layers import attention_auto

IMPLEMENTATIONS = ('auto', 'flax', 'fused')


def check(implementation: str, axis_name: Optional[str]) -> None:
  """Raises ValueError, naming the config field, unless ``implementation`` is one of IMPLEMENTATIONS and fits
  ``axis_name`` (the fused BatchNorm keeps each device's statistics)."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'bn_implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.')
  if implementation == 'fused' and axis_name is not None:
    raise ValueError("bn_implementation='fused' computes each device's own statistics: set bn_axis_name=None, "
                     "or bn_implementation='flax' for synchronised BatchNorm.")


def resolve(implementation: str, axis_name: Optional[str]) -> str:
  """'flax' or 'fused' for a checked ``implementation``: 'auto' is 'fused' on a GPU (the backend compiled for)
  with per-device statistics, else 'flax' (on a CPU the figures stay those of ``nn.BatchNorm``; compiled for a
  v5e, the fused one moves 1 % more bytes a step)."""
  check(implementation, axis_name)
  if implementation == 'auto':
    return 'fused' if axis_name is None and attention_auto.target_backend() == 'gpu' else 'flax'
  return implementation


def _statistics(x, axes, fast_variance):
  # As flax: float32 reductions; E[x²] - E[x]² (clipped at 0), or the two-pass variance.
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = x.mean(axes)
  if fast_variance:
    return mean, jnp.maximum(0.0, lax.square(x).mean(axes) - lax.square(mean))
  return mean, lax.square(x - jnp.expand_dims(mean, axes)).mean(axes)


def _pre_activation(x, mean, var, scale, bias, epsilon, axes):
  # flax's _normalize, operation for operation, so that the values are identical.
  mul = lax.rsqrt(jnp.expand_dims(var, axes) + epsilon) * scale
  return (x - jnp.expand_dims(mean, axes)) * mul + bias


def _forward(x, scale, bias, epsilon, axes, fast_variance, relu, dtype):
  mean, var = _statistics(x, axes, fast_variance)
  y = _pre_activation(x, mean, var, scale, bias, epsilon, axes)
  y = y.astype(dtype)
  return (nn.relu(y) if relu else y), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def batch_norm_train(x, scale, bias, epsilon: float, axes: Sequence[int], fast_variance: bool, relu: bool, dtype):
  """(y, batch mean, batch variance) of BatchNorm with batch statistics over ``axes``; y is ReLU'd if ``relu``
  and of ``dtype``; scale and bias have x's shape reduced over ``axes`` kept as size-1 (broadcastable)."""
  return _forward(x, scale, bias, epsilon, axes, fast_variance, relu, dtype)


def _train_fwd(x, scale, bias, epsilon, axes, fast_variance, relu, dtype):
  y, mean, var = _forward(x, scale, bias, epsilon, axes, fast_variance, relu, dtype)
  return (y, mean, var), (x, scale, bias, mean, var)


def _train_bwd(epsilon, axes, fast_variance, relu, dtype, residuals, cotangents):
  del fast_variance  # The same function either way, so the same gradient.
  x, scale, bias, mean, var = residuals
  dy, dmean, dvar = cotangents
  n = 1
  for a in axes:
    n *= x.shape[a]
  g = dy.astype(jnp.float32)
  if relu:
    # nn.relu's mask, on the same (cast) values.
    g = jnp.where(_pre_activation(x, mean, var, scale, bias, epsilon, axes).astype(dtype) > 0, g, 0.0)
  rstd = lax.rsqrt(jnp.expand_dims(var, axes) + epsilon)
  centred = x.astype(jnp.float32) - jnp.expand_dims(mean, axes)
  x_hat = centred * rstd
  sum_g = jnp.sum(g, axes, keepdims=True)
  sum_g_xhat = jnp.sum(g * x_hat, axes, keepdims=True)
  dx = (scale * rstd / n) * (n * g - sum_g - x_hat * sum_g_xhat)
  # The batch statistics' own cotangents: zero when they only feed the running averages.
  dx = dx + (jnp.expand_dims(dmean, axes) + 2 * jnp.expand_dims(dvar, axes) * centred) / n
  return (dx.astype(x.dtype), sum_g_xhat.reshape(scale.shape).astype(scale.dtype),
          sum_g.reshape(bias.shape).astype(bias.dtype))


batch_norm_train.defvjp(_train_fwd, _train_bwd)


class FusedBatchNorm(nn.Module):
  """BatchNorm over the last axis (then ReLU if ``relu``), with ``nn.BatchNorm``'s fields, variables and values,
  and the backward pass written out (module docstring).

  Attributes:
    use_running_average: normalise with the running averages (inference) instead of the batch's statistics.
    momentum: running-average momentum (new = momentum · old + (1 - momentum) · batch).
    epsilon: added to the variance.
    dtype: the output's dtype (None: x's, promoted with the parameters').
    param_dtype: the dtype of ``scale`` and ``bias``.
    use_fast_variance: E[x²] - E[x]² (True, one pass) or the two-pass variance.
    scale_init, bias_init: initialisers of γ and β.
    relu: apply ReLU to the output.
  """
  use_running_average: Optional[bool] = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_fast_variance: bool = True
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros
  relu: bool = False

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None):
    """Normalises ``x`` (..., C); in training, updates the running averages (mutable 'batch_stats')."""
    use_running_average = nn.merge_param('use_running_average', self.use_running_average, use_running_average)
    features = (x.shape[-1],)
    axes = tuple(range(x.ndim - 1))
    running_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), features)
    running_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    if use_running_average:
      y = _pre_activation(x, running_mean.value, running_var.value, scale, bias, self.epsilon, axes).astype(dtype)
      return nn.relu(y) if self.relu else y  # nn.relu's gradient at 0 (0), as the flax path's.
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, axes, self.use_fast_variance, self.relu, dtype)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return y
