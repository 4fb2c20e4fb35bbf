"""The time-folded convolution computes the same function as the native 3D convolution."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.models import ResNetVideo
from nonlocal_jax.models.blocks import Conv
from tests.models.helpers import run


@pytest.mark.parametrize('kernel,strides,channels', [
    ((1, 3, 3), (1, 2, 2), 6),    # C2D 3×3 with spatial stride: one 2D conv
    ((3, 1, 1), (1, 1, 1), 20),   # I3D 3×1×1: one 3×1 convolution over (frames, positions)
    ((3, 1, 1), (2, 2, 2), 20),   # the same with strides (stride_in_1x1): subsampled positions, strided frames
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


@pytest.mark.parametrize('implementation, rank', [('native', 3), ('folded', 2)])
def test_folded_network_has_only_2d_convolutions(implementation, rank):
  # What 'folded' is for on a GPU: XLA lays out cuDNN's 2D convolutions channels-last, its 3D ones channels-first
  # (transposes around each, 23 % of an H200 step). Every convolution of the step, forward and backward, has this
  # many spatial axes (the number of window sizes in its window, e.g. window = {size = 1x3x3}).
  model = ResNetVideo(num_classes=5, stage_sizes=(1, 1, 1, 1), width=4, stem='8x8', temporal='i3d_3x1x1',
                      nonlocal_locations='res3:0', conv_implementation=implementation)
  x = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  loss = lambda p, v, x: jnp.sum(model.apply({**v, 'params': p}, x, train=True, mutable=['batch_stats'],
                                             rngs={'dropout': jax.random.key(1)})[0])
  hlo = jax.jit(jax.grad(loss)).lower(variables['params'], variables, x).as_text(dialect='hlo')
  windows = re.findall(r'convolution\(.*?window=\{size=([0-9x]+)', hlo)
  assert windows and {len(w.split('x')) for w in windows} == {rank}


def test_auto_takes_the_device_tables_measured_convolutions_for_its_kind_of_network(monkeypatch):
  from nonlocal_jax.layers import attention_auto  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.models import blocks  # pylint: disable=g-import-not-at-top
  assert blocks.resolve_conv_implementation('auto', 'i3d') == 'folded'  # The CPU's rule (no table).
  table = {'entries': [], 'formulations': {'i3d': {'conv_implementation': 'native', 'pool_implementation': 'window'}}}
  monkeypatch.setattr(attention_auto, 'current_table', lambda: table)
  assert blocks.resolve_conv_implementation('auto', 'i3d') == 'native'
  assert blocks.resolve_conv_implementation('auto', 'c2d') == 'folded'  # Not measured for C2D networks.
  assert blocks.resolve_conv_implementation('folded', 'i3d') == 'folded'
  # An I3D network builds native 3D convolutions, a C2D one keeps the CPU's 2D ones.
  x = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32)
  for temporal, rank in (('i3d_3x1x1', 3), ('c2d', 2)):
    model = ResNetVideo(num_classes=5, stage_sizes=(1, 1, 1, 1), width=4, stem='8x8', temporal=temporal)
    variables = jax.eval_shape(lambda x, model=model: model.init(jax.random.key(0), x), x)
    hlo = jax.jit(lambda v, x, model=model: model.apply(v, x)).lower(variables, x).as_text(dialect='hlo')
    windows = re.findall(r'convolution\(.*?window=\{size=([0-9x]+)', hlo)
    assert windows and {len(w.split('x')) for w in windows} == {rank}, temporal
