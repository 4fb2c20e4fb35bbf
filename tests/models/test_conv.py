"""The time-folded convolution computes the same function as the native 3D convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.models.blocks import Conv
from tests.models.helpers import run


@pytest.mark.parametrize('kernel,strides,channels', [
    ((1, 3, 3), (1, 2, 2), 6),    # C2D 3×3 with spatial stride: one 2D conv
    ((3, 1, 1), (1, 1, 1), 20),   # I3D 3×1×1: a sum over the 3 temporal taps
    ((3, 3, 3), (1, 1, 1), 20),   # I3D 3×3×3
    ((5, 7, 7), (2, 2, 2), 3),    # the I3D stem on RGB: stacked taps, temporal stride 2
    ((1, 7, 7), (2, 2, 2), 3),    # the C2D stem of the 32x2 models: temporal stride with a 1-frame kernel
])
def test_folded_equals_native(kernel, strides, channels):
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 10, channels))
  native = Conv(5, kernel, strides, implementation='native')
  folded = Conv(5, kernel, strides, implementation='folded')
  variables = native.init(jax.random.key(1), x)

  def both(v, x):
    value = lambda m, v: m.apply(v, x)
    grads = [jax.grad(lambda v, m=m: jnp.sum(jnp.sin(value(m, v))))(v) for m in (native, folded)]
    return value(native, v), value(folded, v), grads

  a, b, (grad_a, grad_b) = run(both, variables, x)
  assert a.shape == b.shape
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(grad_b['params']['kernel']), np.asarray(grad_a['params']['kernel']),
                             rtol=1e-4, atol=1e-4)
  # Output length along each axis: floor((n + 2·(k // 2) − k) / s) + 1.
  expected = tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip((7, 9, 10), kernel, strides))
  assert a.shape == (2,) + expected + (5,)
