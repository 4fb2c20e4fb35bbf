"""Max pooling without scatter: the same values and gradients as a NumPy float64 max pool, and networks whose
parameter gradients do not depend on how their pools run."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers.pooling import max_pool
from nonlocal_jax.models import ResNetVideo
from tests.models.helpers import run


def numpy_max_pool(x, window, strides, padding):
  """(pooled, d pooled-weighted-sum / dx) by loops in float64: the gradient of sum(w · pool(x)) sends each w to
  its window's (unique) argmax."""
  x = np.asarray(x, np.float64)
  pads = [(0, 0)] + list(padding) + [(0, 0)]
  xp = np.pad(x, pads, constant_values=-np.inf)
  out_shape = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, strides)]
  out = np.empty([x.shape[0]] + out_shape + [x.shape[-1]])
  argmax = {}
  for b, c in itertools.product(range(x.shape[0]), range(x.shape[-1])):
    for o in itertools.product(*[range(n) for n in out_shape]):
      region = tuple(slice(i * s, i * s + w) for i, w, s in zip(o, window, strides))
      patch = xp[(b,) + region + (c,)]
      k = np.unravel_index(np.argmax(patch), patch.shape)
      out[(b,) + o + (c,)] = patch[k]
      argmax[(b,) + o + (c,)] = (b,) + tuple(r.start + i - lo for r, i, (lo, _) in zip(region, k, padding)) + (c,)
  return out, argmax


CASES = [
    # The C2D 8x8 stem's pool1 and pool2, the non-local block's subsampling, the Table 1 stem, an image stem.
    ((2, 3, 9, 10, 3), (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
    ((2, 4, 5, 5, 3), (2, 1, 1), (2, 1, 1), ((0, 0), (0, 0), (0, 0))),
    ((1, 2, 6, 8, 4), (1, 2, 2), (1, 2, 2), ((0, 0), (0, 0), (0, 0))),
    ((1, 5, 7, 7, 2), (3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),
    ((2, 7, 9, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 5, 7, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),  # a window that does not tile: strided slices
]


@pytest.mark.parametrize('implementation', ['window', 'slices'])
@pytest.mark.parametrize('shape, window, strides, padding', CASES)
def test_values_and_gradients_match_numpy(shape, window, strides, padding, implementation):
  # Distinct values (a permutation), so every window has one maximum and the gradient is defined by it.
  rng = np.random.default_rng(0)
  x = (rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(np.float32)
  expected, argmax = numpy_max_pool(x, window, strides, padding)
  weights = rng.normal(size=expected.shape).astype(np.float32)
  value, grad = jax.value_and_grad(
      lambda x: jnp.sum(weights * max_pool(x, window, strides, padding, implementation)))(x)
  got = max_pool(x, window, strides, padding, implementation)
  np.testing.assert_array_equal(np.asarray(got, np.float64), expected)
  expected_grad = np.zeros(shape)
  for o, i in argmax.items():
    expected_grad[i] += weights[o]
  np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(float(value), float(np.sum(weights * expected)), rtol=1e-5)


def test_ties_send_the_gradient_to_one_position_as_reduce_window_does():
  # Windows of equal values (as after a ReLU): reduce_window gives the first position of each window the whole
  # gradient; so does 'slices' (first along each axis in turn), with no comparison of values in the backward pass.
  x = jnp.zeros((1, 3, 6, 6, 2))
  grads = [jax.grad(lambda x: jnp.sum(max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)), i)))(x)
           for i in ('window', 'slices')]
  np.testing.assert_array_equal(np.asarray(grads[1]), np.asarray(grads[0]))
  assert float(jnp.sum(grads[1])) == 3 * 3 * 3 * 2  # One unit per output.


def test_nan_propagates_as_with_reduce_window():
  x = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(1, 2, 6, 6, 1)
  x[0, 1, 3, 4, 0] = np.nan
  for window in ((1, 3, 3), (1, 2, 2)):
    expected = np.asarray(max_pool(jnp.asarray(x), window, (1, 2, 2), 'VALID', 'window'))
    got = np.asarray(max_pool(jnp.asarray(x), window, (1, 2, 2), 'VALID', 'slices'))
    assert np.isnan(expected).sum() == 1
    np.testing.assert_array_equal(got, expected)  # NaNs compare equal here.


def test_unknown_implementation_is_named():
  with pytest.raises(ValueError, match="pool_implementation must be one of .*got 'fast'"):
    max_pool(jnp.zeros((1, 4, 4, 1)), (2, 2), (2, 2), 'VALID', 'fast')


def test_network_parameter_gradients_do_not_depend_on_the_pools():
  # Every pool of the network follows a ReLU, so it sees many tied zeros: the parameter gradients of 'window' and
  # 'slices' agree (compiled with the tests' cheap XLA options, under which a value-comparing backward pass once
  # gave NaNs here).
  x = jax.random.normal(jax.random.key(0), (1, 2, 32, 32, 3))
  kwargs = dict(num_classes=5, stage_sizes=(1, 1, 1, 1), width=4, stem='8x8', dropout_rate=0.0,
                nonlocal_locations='res3:0',
                nonlocal_block={'bn_scale_init': 1.0})
  models = [ResNetVideo(pool_implementation=p, **kwargs) for p in ('window', 'slices')]
  variables = run(lambda key, x: models[0].init(key, x, train=False), jax.random.key(1), x)

  def grads(variables, x):
    loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply({**variables, 'params': p}, x, train=True,
                                                         mutable=['batch_stats'])[0]))
    return [jax.grad(loss(m))(variables['params']) for m in models]

  window, slices = run(grads, variables, x)
  for a, b in zip(jax.tree.leaves(window), jax.tree.leaves(slices)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('implementation, scatters', [('window', True), ('slices', False)])
def test_only_window_differentiates_through_a_scatter(implementation, scatters):
  # What 'slices' is for: the GPU ran reduce_window's gradient as select_and_scatter kernels (14 % of a step).
  x = jnp.zeros((1, 4, 9, 9, 8))
  loss = lambda x: jnp.sum(max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)), implementation) ** 2)
  hlo = jax.jit(jax.grad(loss)).lower(x).as_text()
  assert ('select_and_scatter' in hlo) == scatters


def test_auto_takes_the_device_tables_measured_pools_for_its_kind_of_network(monkeypatch):
  from nonlocal_jax.layers import attention_auto, pooling  # pylint: disable=g-import-not-at-top
  assert pooling.resolve('auto', 'c2d') == 'window'  # The CPU has no table.
  table = {'entries': [], 'formulations': {'c2d': {'conv_implementation': 'folded', 'pool_implementation': 'slices'}}}
  monkeypatch.setattr(attention_auto, 'current_table', lambda: table)
  assert pooling.resolve('auto', 'c2d') == 'slices' and pooling.resolve('window', 'c2d') == 'window'
  assert pooling.resolve('auto', 'i3d') == 'window'  # Not measured for I3D networks.
  assert pooling.resolve('auto') == 'window'  # A layer on its own: no kind of network.

  # The network hands its stem and its blocks the measured pools: the HLO of a C2D step has no scatter left.
  model = ResNetVideo(num_classes=5, stage_sizes=(1, 1, 1, 1), width=4, stem='8x8', dropout_rate=0.0,
                      nonlocal_locations='res3:0', nonlocal_block={'subsample': (1, 2, 2)})
  x = jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  loss = lambda p, v, x: jnp.sum(model.apply({**v, 'params': p}, x, train=True, mutable=['batch_stats'])[0])
  hlo = lambda: jax.jit(jax.grad(loss)).lower(variables['params'], variables, x).as_text()
  assert 'select_and_scatter' not in hlo()
  monkeypatch.setattr(attention_auto, 'current_table', lambda: {'entries': []})  # A table of attention only.
  assert pooling.resolve('auto', 'c2d') == 'window' and 'select_and_scatter' in hlo()
