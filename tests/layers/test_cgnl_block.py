"""Tests of ``nonlocal_jax.layers.cgnl_block.CGNLBlock`` (issue 17).

The reference below is an independent float64 NumPy transcription of the paper's generalised non-local operation:
it forms the full (N·C'/G)×(N·C'/G) affinity of every group element by element (which the block never does), the
kernel from its formula, the grouped W_z one output channel at a time and the GroupNorm one group at a time.
Tiny shapes, mostly eager: that costs less than compiling one program per parametrised case.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers.cgnl_block import CGNLBlock
from tests.layers.family_helpers import (REL_TOL, assert_bfloat16_compute, directional_derivatives, random_input,
                                         relative_error, seed_of)

SHAPES = {'1d': (2, 7, 8), '2d': (2, 3, 4, 8), '3d': (2, 2, 3, 2, 8)}


def randomize(variables, seed):
  """Every parameter random: kernels of std 1/sqrt(fan_in) (unit-scale θ, φ, g, so every Taylor term counts),
  GroupNorm scale away from 0 with both signs, non-zero GroupNorm bias."""
  rng = np.random.default_rng(seed)

  def leaf(path, value):
    name = path[-1].key
    if name == 'kernel':
      sample = rng.normal(0.0, value.shape[0] ** -0.5, value.shape)
    elif name == 'scale':
      sample = rng.uniform(0.5, 1.5, value.shape) * rng.choice([-1.0, 1.0], value.shape)
    else:
      sample = rng.normal(0.0, 0.3, value.shape)
    return jnp.asarray(sample, value.dtype)

  return jax.tree_util.tree_map_with_path(leaf, variables)


def kernel_matrix(kernel, a, b, order, gamma):
  """f(a_k, b_l) for every pair of elements: a·b, or Σ_{p≤P} exp(-2γ)(2γ)^p/p! a^p b^p (the truncated RBF)."""
  if kernel == 'dot_product':
    return np.outer(a, b)
  f = np.zeros((a.size, b.size))
  for p in range(order + 1):
    f += math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * np.outer(a ** p, b ** p)
  return f


def reference(x, params, *, kernel='dot_product', order=3, gamma=1e-4, groups=1, scale=False, eps=1e-5):
  """(z, W_z y) of the block in float64, from the paper's equations."""
  x = np.asarray(x, np.float64)
  p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
  batch, channels = x.shape[0], x.shape[-1]
  positions = x.reshape(batch, -1, channels)  # (B, N, C)
  theta, phi, g = (positions @ p[name]['kernel'] for name in ('theta', 'phi', 'g'))
  inter = theta.shape[-1]
  width = inter // groups
  y = np.zeros_like(theta)
  for b in range(batch):
    for k in range(groups):
      cols = slice(k * width, (k + 1) * width)
      # vec(·): the group's elements, position-major; the order does not matter as long as it is the same.
      t, f_, v = theta[b][:, cols].ravel(), phi[b][:, cols].ravel(), g[b][:, cols].ravel()
      affinity = kernel_matrix(kernel, t, f_, order, gamma)
      if scale:
        affinity = affinity / math.sqrt(t.size)
      y[b][:, cols] = (affinity @ v).reshape(-1, width)
  out_kernel = p['out']['kernel']  # (C'/G, C)
  wz = np.zeros(positions.shape)
  per_out = channels // groups
  for o in range(channels):
    k = o // per_out
    wz[:, :, o] = y[:, :, k * width:(k + 1) * width] @ out_kernel[:, o]
  normed = np.zeros_like(wz)
  for b in range(batch):
    for k in range(groups):
      chunk = wz[b][:, k * per_out:(k + 1) * per_out]
      normed[b][:, k * per_out:(k + 1) * per_out] = (chunk - chunk.mean()) / np.sqrt(chunk.var() + eps)
  z = normed * p['gn']['scale'] + p['gn']['bias'] + positions
  return z.reshape(x.shape), wz.reshape(x.shape)


def apply_with_wz(block, variables, x):
  """The block's output and the output of its W_z (captured before the GroupNorm)."""
  z, state = block.apply(variables, x, capture_intermediates=lambda module, _: module.name == 'out')
  return z, state['intermediates']['out']['__call__'][0].reshape(x.shape)


def options(block):
  return dict(kernel=block.kernel, order=block.order, gamma=block.gamma, groups=block.groups, scale=block.scale,
              eps=block.epsilon)


# --- Against the float64 reference ------------------------------------------------------------------------------

# γ = 0.5 (not the official 1e-4) so that every Taylor term moves the output far more than the tolerance.
CASES = [(r, k, g) for r in SHAPES for k in ('dot_product', 'gaussian') for g in (1, 2)]


@pytest.mark.parametrize('rank,kernel,groups', CASES, ids=['-'.join(map(str, c)) for c in CASES])
def test_matches_reference(rank, kernel, groups):
  block = CGNLBlock(kernel=kernel, groups=groups, gamma=0.5, scale=groups == 2)
  x = random_input(SHAPES[rank], seed_of('x', rank, kernel, groups))
  variables = randomize(block.init(jax.random.PRNGKey(0), x), seed_of('v', rank, kernel, groups))
  z, wz = apply_with_wz(block, variables, x)
  z_ref, wz_ref = reference(x, variables['params'], **options(block))
  assert z.shape == x.shape and z.dtype == jnp.float32
  assert relative_error(wz, wz_ref) <= REL_TOL  # W_z y: the kernel itself, before GroupNorm hides its scale
  assert relative_error(z - x, z_ref - x) <= REL_TOL


@pytest.mark.parametrize('order', [0, 1, 4])
def test_taylor_order_matches_reference_and_matters(order):
  block = CGNLBlock(kernel='gaussian', order=order, gamma=0.5, inter_channels=6)
  x = random_input(SHAPES['2d'], seed_of('order', order))
  variables = randomize(block.init(jax.random.PRNGKey(1), x), seed_of('order-v', order))
  _, wz = apply_with_wz(block, variables, x)
  _, wz_ref = reference(x, variables['params'], **options(block))
  assert relative_error(wz, wz_ref) <= REL_TOL
  # A series cut one term short (the fault of an off-by-one order) is far outside the tolerance.
  _, wz_short = reference(x, variables['params'], **{**options(block), 'order': order + 1})
  assert relative_error(wz_short, wz_ref) > 100 * REL_TOL


def test_official_gamma_and_scale_match_reference():
  # The defaults of the official code: γ = 1e-4 (higher terms tiny but present), and the scale on.
  block = CGNLBlock(kernel='gaussian', scale=True, groups=4)
  x = random_input(SHAPES['3d'], 3)
  variables = randomize(block.init(jax.random.PRNGKey(2), x), 4)
  z, wz = apply_with_wz(block, variables, x)
  z_ref, wz_ref = reference(x, variables['params'], **options(block))
  assert relative_error(wz, wz_ref) <= REL_TOL and relative_error(z - x, z_ref - x) <= REL_TOL
  _, wz_unscaled = reference(x, variables['params'], **{**options(block), 'scale': False})
  assert relative_error(wz, wz_unscaled) > 0.5  # the scale is really applied (sqrt(N·C'/G) = 6)


# --- Identity at initialisation, parameters ---------------------------------------------------------------------


@pytest.mark.parametrize('kernel', ['dot_product', 'gaussian'])
@pytest.mark.parametrize('rank', list(SHAPES))
def test_identity_at_init(rank, kernel):
  block = CGNLBlock(kernel=kernel, groups=2)
  x = random_input(SHAPES[rank], 5)
  variables = block.init(jax.random.PRNGKey(3), x)
  np.testing.assert_array_equal(block.apply(variables, x), x)
  np.testing.assert_array_equal(variables['params']['gn']['scale'], 0.0)
  assert float(jnp.abs(apply_with_wz(block, variables, x)[1]).max()) > 0  # the branch computes; GN gates it


def test_parameter_names_and_shapes():
  x = jnp.zeros((1, 2, 4, 4, 12))
  variables = jax.eval_shape(CGNLBlock(groups=3).init, jax.random.PRNGKey(0), x)
  shapes = {'/'.join(p.key for p in path): tuple(v.shape)
            for path, v in jax.tree_util.tree_leaves_with_path(variables['params'])}
  assert shapes == {'theta/kernel': (12, 6), 'phi/kernel': (12, 6), 'g/kernel': (12, 6), 'out/kernel': (2, 12),
                    'gn/scale': (12,), 'gn/bias': (12,)}
  assert set(variables) == {'params'}


# --- jit, grad, other sizes, bf16 -------------------------------------------------------------------------------


def test_jit_matches_eager():
  block = CGNLBlock(kernel='gaussian', groups=2, gamma=0.5)
  x = random_input(SHAPES['3d'], 6)
  variables = randomize(block.init(jax.random.PRNGKey(4), x), 7)
  jitted = jax.jit(functools.partial(block.apply, train=True))(variables, x)
  np.testing.assert_allclose(jitted, block.apply(variables, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel', ['dot_product', 'gaussian'])
def test_grad_matches_reference_finite_differences(kernel):
  """jax.grad (float32) along a random direction of (params, x) against float64 central differences."""
  block = CGNLBlock(kernel=kernel, groups=2, gamma=0.5)
  shape = SHAPES['2d']
  rng = np.random.default_rng(seed_of('fd', kernel))
  x = random_input(shape, seed_of('fd-x', kernel))
  variables = randomize(block.init(jax.random.PRNGKey(5), x), seed_of('fd-v', kernel))
  weights = rng.normal(size=shape)
  loss = lambda v, x: jnp.sum(block.apply(v, x) * weights)
  grads = jax.grad(loss, argnums=(0, 1))(variables, jnp.asarray(x))
  reference_loss = lambda params, x: float(np.sum(reference(x, params, **options(block))[0] * weights))
  analytic, numeric = directional_derivatives(grads, variables, x, reference_loss, rng)
  assert abs(analytic - numeric) <= 1e-4 * abs(numeric)


def test_gradients_at_init_reach_the_norm_only():
  """GN scale 0: exactly no gradient reaches θ, φ, g, W_z; the GN scale gets one, and after one step all do."""
  block = CGNLBlock(kernel='gaussian', groups=2)
  x = jnp.asarray(random_input(SHAPES['3d'], 8))
  projection = jnp.asarray(random_input((8, 8), 9))
  variables = block.init(jax.random.PRNGKey(6), x)
  loss = jax.jit(jax.grad(lambda v: jnp.sum((block.apply(v, x) @ projection) ** 2)))
  grads = loss(variables)['params']
  for name in ('theta', 'phi', 'g', 'out'):
    assert float(jnp.abs(grads[name]['kernel']).max()) == 0.0, name
  assert float(jnp.abs(grads['gn']['scale']).max()) > 0
  stepped = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g / float(jnp.abs(g).max() + 1e-30), variables,
                                   {'params': grads})
  grads = loss(stepped)['params']
  for name in ('theta', 'phi', 'g', 'out'):
    assert np.all(np.isfinite(grads[name]['kernel'])) and float(jnp.abs(grads[name]['kernel']).max()) > 0, name


SIZES = [('1d', (3, 13, 8)), ('2d', (1, 5, 2, 8)), ('3d', (1, 3, 4, 5, 8))]


@pytest.mark.parametrize('rank,apply_shape', SIZES, ids=[s[0] for s in SIZES])
def test_same_parameters_apply_to_other_sizes(rank, apply_shape):
  block = CGNLBlock(kernel='gaussian', groups=2, gamma=0.5, scale=True)
  variables = randomize(block.init(jax.random.PRNGKey(7), random_input(SHAPES[rank], 1)), seed_of('sizes', rank))
  x = random_input(apply_shape, seed_of('sizes-x', rank))
  z = jax.jit(block.apply)(variables, x)
  z_ref, _ = reference(x, variables['params'], **options(block))
  assert z.shape == apply_shape
  assert relative_error(z - x, z_ref - x) <= REL_TOL


@pytest.mark.parametrize('kernel', ['dot_product', 'gaussian'])
def test_bfloat16_compute(kernel):
  block32 = CGNLBlock(kernel=kernel, groups=2, gamma=0.5)
  x = random_input(SHAPES['3d'], 10)
  assert_bfloat16_compute(block32, x, randomize(block32.init(jax.random.PRNGKey(8), x), 11))


# --- Bad arguments ----------------------------------------------------------------------------------------------

BAD = [
    ('kernel', {'kernel': 'cosine'}, (1, 4, 4, 8), r'kernel.*gaussian'),
    ('order', {'order': -1}, (1, 4, 4, 8), r'order'),
    ('order-float', {'order': 2.5}, (1, 4, 4, 8), r'order'),
    ('gamma', {'gamma': 0.0}, (1, 4, 4, 8), r'gamma'),
    ('groups', {'groups': 0}, (1, 4, 4, 8), r'groups'),
    ('groups-not-dividing-inter', {'groups': 4}, (1, 4, 4, 12), r"groups=4 must divide.*C'=6"),
    ('groups-not-dividing-channels', {'groups': 2, 'inter_channels': 4}, (1, 4, 4, 9), r'groups=2.*C=9'),
    ('inter-channels', {'inter_channels': 0}, (1, 4, 4, 8), r'inter_channels'),
    ('scale', {'scale': 'yes'}, (1, 4, 4, 8), r'scale must be True or False'),
    ('norm-scale-init', {'norm_scale_init': float('nan')}, (1, 4, 4, 8), r'norm_scale_init'),
    ('epsilon', {'epsilon': 0.0}, (1, 4, 4, 8), r'epsilon'),
    ('rank-2', {}, (4, 8), r'rank'),
    ('rank-6', {}, (1, 2, 2, 2, 2, 8), r'rank'),
]


@pytest.mark.parametrize('name,kwargs,shape,message', BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_raise_value_error(name, kwargs, shape, message):
  with pytest.raises(ValueError, match=message):
    CGNLBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))


def test_check_without_input():
  CGNLBlock(groups=4, inter_channels=8).check(3)
  with pytest.raises(ValueError, match='input_rank'):
    CGNLBlock().check(4)
  with pytest.raises(ValueError, match='groups=3 must divide inter_channels=8'):
    CGNLBlock(groups=3, inter_channels=8).check()
