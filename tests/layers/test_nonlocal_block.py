"""Tests of ``nonlocal_jax.layers.NonLocalBlock`` (issue 2).

The block is checked against the independent float64 NumPy reference in ``tests/layers/reference.py`` over
every pairwise function × pool position × subsampling × position set, then for identity at initialisation,
gradients, jit, other input sizes, agreement of the implementation paths, the sown attention weights, bf16
compute, argument errors and initialisation statistics.

Most checks run eagerly on tiny shapes: that costs less than compiling one program per parametrised case.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import NonLocalBlock
from tests.layers import reference

PAIRWISE = ('gaussian', 'embedded_gaussian', 'dot_product', 'concatenation')
SOFTMAX = ('gaussian', 'embedded_gaussian')

# name: (input shape, subsampling window, extra block arguments). Odd sizes check the floor of VALID pooling.
GEOMETRIES = {
    '1d': ((2, 11, 8), (2,), {}),
    '2d': ((2, 6, 5, 8), (2, 2), {}),
    '3d_spacetime': ((2, 4, 6, 6, 8), (1, 2, 2), {}),
    '3d_space': ((2, 4, 6, 6, 8), (1, 2, 2), {'positions': 'space'}),
    '3d_time': ((2, 4, 6, 6, 8), (2, 1, 1), {'positions': 'time'}),
    '3d_groups': ((2, 4, 6, 6, 8), (1, 2, 2), {'temporal_groups': 2}),
}

REL_TOL = 1e-4  # the bound against the float64 reference


def seed_of(*parts) -> int:
  """A reproducible seed that differs between parametrised cases."""
  return zlib.crc32(repr(parts).encode())


def random_input(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def randomize(variables, seed):
  """Replaces every variable by a random value of the same shape, so no term of the block is trivially 0 or 1.

  Kernels get std 1/sqrt(fan_in) (unit-scale embeddings, softmax neither flat nor one-hot), biases and the BN
  shift are non-zero, the BN scale is away from 0 with both signs, and the running mean/var are non-trivial.
  """
  rng = np.random.default_rng(seed)

  def leaf(path, value):
    names = [p.key for p in path]
    shape = value.shape
    if names[0] == 'batch_stats':
      sample = rng.normal(0.0, 0.3, shape) if names[-1] == 'mean' else rng.uniform(0.5, 2.0, shape)
    elif names[-2] == 'bn' and names[-1] == 'scale':
      sample = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    elif names[-1] == 'kernel':
      sample = rng.normal(0.0, shape[0] ** -0.5, shape)
    else:
      sample = rng.normal(0.0, 0.3, shape)
    return jnp.asarray(sample, dtype=value.dtype)

  return jax.tree_util.tree_map_with_path(leaf, variables)


def random_variables(block, x, seed):
  return randomize(block.init(jax.random.PRNGKey(0), x), seed)


def reference_kwargs(block):
  """The block's configuration, in the reference's argument names."""
  return dict(pairwise=block.pairwise, subsample=block.subsample, pool_position=block.pool_position,
              scale=block.scale, positions=block.positions, temporal_groups=block.temporal_groups,
              norm=block.norm or 'batch', eps=block.bn_epsilon)  # None: a block on its own is 'batch'.


def branch_error(z, x, z_ref, parts):
  """max|Δ(z - x)| over the size of the y-dependent part of the reference z - x.

  Dividing by the y-dependent part (not by z, nor by z - x, which holds the BN shift and running mean) keeps
  an error in y from hiding behind the residual or the constant terms.
  """
  got = np.asarray(z, np.float64) - np.asarray(x, np.float64)
  want = np.asarray(z_ref) - np.asarray(x, np.float64)
  signal = np.abs(parts['branch'] - parts['offset']).max()
  assert signal > 1e-2 * np.abs(want).max(), 'the test data leave y almost no influence on z'
  return np.abs(got - want).max() / signal


def relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()


# --- 1. Against the float64 reference -----------------------------------------------------------------------


@pytest.mark.parametrize('geometry', list(GEOMETRIES))
@pytest.mark.parametrize('subsampled', [False, True], ids=['full', 'subsampled'])
@pytest.mark.parametrize('pool_position', ['before', 'after'])
@pytest.mark.parametrize('pairwise', PAIRWISE)
def test_matches_reference(pairwise, pool_position, subsampled, geometry):
  shape, window, extra = GEOMETRIES[geometry]
  block = NonLocalBlock(pairwise=pairwise, subsample=window if subsampled else None, pool_position=pool_position,
                        implementation='naive', **extra)
  seed = seed_of(pairwise, pool_position, subsampled, geometry)
  x = random_input(shape, seed)
  variables = random_variables(block, x, seed)
  z = block.apply(variables, x, train=False)
  z_ref, parts = reference.nonlocal_block(x, variables['params'], variables['batch_stats'],
                                          **reference_kwargs(block))
  assert z.shape == x.shape and z.dtype == jnp.float32
  assert branch_error(z, x, z_ref, parts) <= REL_TOL


def test_embedded_gaussian_without_scale_matches_reference():
  # scale=False must drop the C'^-0.5 factor: with C' = 4 that halves the logits, far outside the tolerance.
  shape, window, extra = GEOMETRIES['2d']
  block = NonLocalBlock(pairwise='embedded_gaussian', scale=False, subsample=window, implementation='naive')
  x = random_input(shape, 1)
  variables = random_variables(block, x, 2)
  z_ref, parts = reference.nonlocal_block(x, variables['params'], variables['batch_stats'],
                                          **reference_kwargs(block))
  assert branch_error(block.apply(variables, x), x, z_ref, parts) <= REL_TOL
  scaled_ref, _ = reference.nonlocal_block(x, variables['params'], variables['batch_stats'],
                                           **{**reference_kwargs(block), 'scale': True})
  assert branch_error(block.apply(variables, x), x, scaled_ref, parts) > 100 * REL_TOL


@pytest.mark.parametrize('norm', ['affine', 'none'])
def test_frozen_bn_norms_match_reference(norm):
  shape, window, extra = GEOMETRIES['3d_groups']
  block = NonLocalBlock(pairwise='embedded_gaussian', norm=norm, subsample=window, implementation='naive',
                        **extra)
  x = random_input(shape, 3)
  variables = random_variables(block, x, 4)
  assert 'batch_stats' not in variables
  assert ('bn' in variables['params']) == (norm == 'affine')
  z_ref, parts = reference.nonlocal_block(x, variables['params'], **reference_kwargs(block))
  assert branch_error(block.apply(variables, x), x, z_ref, parts) <= REL_TOL


@pytest.mark.parametrize('pairwise', PAIRWISE)
def test_train_mode_batch_norm_and_running_statistics(pairwise):
  shape, window, extra = GEOMETRIES['3d_spacetime']
  block = NonLocalBlock(pairwise=pairwise, subsample=window, implementation='naive')
  x = random_input(shape, seed_of('train', pairwise))
  variables = random_variables(block, x, seed_of('train-vars', pairwise))
  z, state = block.apply(variables, x, train=True, mutable=['batch_stats'])
  z_ref, parts = reference.nonlocal_block(x, variables['params'], **reference_kwargs(block), train=True)
  assert branch_error(z, x, z_ref, parts) <= REL_TOL
  # Flax and the official code: running = 0.9 running + 0.1 batch, with the biased batch variance.
  old = variables['batch_stats']['bn']
  new = state['batch_stats']['bn']
  np.testing.assert_allclose(new['mean'], 0.9 * np.asarray(old['mean'], np.float64) + 0.1 * parts['batch_mean'],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new['var'], 0.9 * np.asarray(old['var'], np.float64) + 0.1 * parts['batch_var'],
                             rtol=1e-5, atol=1e-6)


def test_train_mode_batch_norm_is_accurate_when_the_mean_dominates():
  """Batch statistics of W_z y whose channel means are large against their spread across positions.

  That is the usual case: y is an average over many positions, so it varies little from one query to the
  next. The one-pass variance E[v²] - E[v]² loses about log10(mean²/var) digits of float32 here; a two-pass
  variance does not.
  """
  shape, window, extra = GEOMETRIES['2d']
  block = NonLocalBlock(pairwise='embedded_gaussian', subsample=window, implementation='naive')
  x = random_input(shape, 10)
  variables = random_variables(block, x, 11)
  variables['params']['out']['bias'] = jnp.full((shape[-1],), 30.0)
  z, state = block.apply(variables, x, train=True, mutable=['batch_stats'])
  z_ref, parts = reference.nonlocal_block(x, variables['params'], **reference_kwargs(block), train=True)
  assert (parts['batch_mean'] ** 2 / parts['batch_var']).min() > 1e3  # the regime this test is about
  assert branch_error(z, x, z_ref, parts) <= REL_TOL
  np.testing.assert_allclose(state['batch_stats']['bn']['var'],
                             0.9 * np.asarray(variables['batch_stats']['bn']['var']) + 0.1 * parts['batch_var'],
                             rtol=1e-4)


def test_non_zero_bn_scale_init_matches_reference():
  # With γ = 0.5 at initialisation the block is no longer the identity: z = x + 0.5·BN(W_z y) in train mode.
  shape, window, extra = GEOMETRIES['3d_spacetime']
  block = NonLocalBlock(subsample=window, implementation='naive', weight_init='he', bn_scale_init=0.5)
  x = random_input(shape, 21)
  variables = block.init(jax.random.PRNGKey(3), x)
  np.testing.assert_array_equal(variables['params']['bn']['scale'], np.full((shape[-1],), 0.5, np.float32))
  z, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
  z_ref, parts = reference.nonlocal_block(x, variables['params'], **reference_kwargs(block), train=True)
  assert branch_error(z, x, z_ref, parts) <= REL_TOL
  assert float(jnp.abs(z - x).max()) > 0.1


@pytest.mark.parametrize('weight_init', ['official', 'he'])
def test_tied_embedding_init_starts_phi_as_theta(weight_init):
  shape, window, _ = GEOMETRIES['3d_spacetime']
  x = random_input(shape, 22)
  tied = NonLocalBlock(subsample=window, implementation='naive', weight_init=weight_init, bn_scale_init=1.0,
                       tied_embedding_init=True)
  params = tied.init(jax.random.PRNGKey(4), x)['params']
  np.testing.assert_array_equal(params['phi']['kernel'], params['theta']['kernel'])
  assert not np.allclose(params['g']['kernel'], params['theta']['kernel'])
  untied = NonLocalBlock(subsample=window, weight_init=weight_init).init(jax.random.PRNGKey(4), x)['params']
  assert not np.allclose(untied['phi']['kernel'], untied['theta']['kernel'])
  # Applying needs no 'params' key, and the block still matches the float64 reference with those weights.
  variables = tied.init(jax.random.PRNGKey(4), x)
  z, _ = tied.apply(variables, x, train=True, mutable=['batch_stats'])
  z_ref, parts = reference.nonlocal_block(x, variables['params'], **reference_kwargs(tied), train=True)
  assert branch_error(z, x, z_ref, parts) <= REL_TOL


def test_tied_embedding_init_concatenation_starts_as_a_difference():
  shape, _, _ = GEOMETRIES['3d_spacetime']
  x = random_input(shape, 23)
  block = NonLocalBlock(pairwise='concatenation', implementation='naive', weight_init='he', bn_scale_init=1.0,
                        tied_embedding_init=True)
  variables = block.init(jax.random.PRNGKey(5), x)
  p = variables['params']
  w_f = np.asarray(p['concat_project']['kernel'], np.float64)
  half = w_f.shape[0] // 2
  np.testing.assert_array_equal(w_f[half:], -w_f[:half])
  assert np.abs(w_f).min() > 0
  # f(x_i, x_j) = ReLU(vᵀW(x_i - x_j)) / N by hand, against the weights the block sows.
  _, inter = block.apply(variables, x, train=False, mutable=['intermediates'])
  got = np.asarray(inter['intermediates']['attention'][0], np.float64)
  feats = np.asarray(x, np.float64).reshape(shape[0], -1, shape[-1])
  proj = feats @ np.asarray(p['theta']['kernel'], np.float64) @ w_f[:half, 0]
  want = np.maximum(proj[:, :, None] - proj[:, None, :], 0.0) / feats.shape[1]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
  assert np.all(np.diagonal(got, axis1=1, axis2=2) == 0)


# --- 2. Identity at initialisation; gradients after one SGD step ---------------------------------------------


@pytest.mark.parametrize('norm', ['batch', 'affine', 'none'])
@pytest.mark.parametrize('pairwise', PAIRWISE)
def test_identity_at_init(pairwise, norm):
  shape, window, extra = GEOMETRIES['3d_spacetime']
  block = NonLocalBlock(pairwise=pairwise, norm=norm, subsample=window)
  x = random_input(shape, 5)
  variables = block.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(block.apply(variables, x, train=False), x)
  if norm == 'batch':
    z, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
    np.testing.assert_array_equal(z, x)


def expected_parameter_shapes(pairwise, norm, channels, inter, use_bias=True):
  """The documented parameter names and shapes of the block."""
  shapes = {}
  convs = {'g': (channels, inter), 'out': (inter, channels)}
  if pairwise != 'gaussian':
    convs.update(theta=(channels, inter), phi=(channels, inter))
  for name, kernel in convs.items():
    shapes[f'{name}/kernel'] = kernel
    if use_bias:
      shapes[f'{name}/bias'] = kernel[1:]
  if pairwise == 'concatenation':
    shapes['concat_project/kernel'] = (2 * inter, 1)
  if norm != 'none':
    shapes['bn/scale'] = shapes['bn/bias'] = (channels,)
  return shapes


def flat_shapes(tree):
  return {'/'.join(p.key for p in path): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('norm', ['batch', 'affine', 'none'])
@pytest.mark.parametrize('pairwise', PAIRWISE)
def test_parameter_names_and_shapes(pairwise, norm, use_bias):
  x = jnp.zeros((1, 2, 4, 4, 12))
  init = lambda block: jax.eval_shape(block.init, jax.random.PRNGKey(0), x)  # shapes only: nothing compiles
  variables = init(NonLocalBlock(pairwise=pairwise, norm=norm, use_bias=use_bias))
  assert flat_shapes(variables['params']) == expected_parameter_shapes(pairwise, norm, 12, 6, use_bias)
  if norm == 'batch':
    assert flat_shapes(variables['batch_stats']) == {'bn/mean': (12,), 'bn/var': (12,)}
  else:
    assert 'batch_stats' not in variables
  custom = init(NonLocalBlock(pairwise=pairwise, inter_channels=5))
  assert custom['params']['g']['kernel'].shape == (12, 5)


def sgd_loss(block, params, other, x, projection):
  """A loss that depends on every output channel: Σ ((z P)²), with BN in training mode."""
  z, _ = block.apply({'params': params, **other}, x, train=True, mutable=list(other))
  return jnp.sum((z @ projection) ** 2)


def max_abs(tree):
  return max(float(jnp.abs(leaf).max()) for leaf in jax.tree_util.tree_leaves(tree))


def structurally_zero_biases(pairwise, norm):
  """The biases whose gradient is 0 in exact arithmetic at every step, and why.

  - W_z bias before a training-mode BN: the batch mean removes any constant.
  - φ bias of a softmax function: it adds θ_iᵀb_φ, the same for every j, to row i of the logits.
  - g bias of a softmax function before a training-mode BN: the weights of row i sum to 1, so it adds b_g to
    every y_i, a constant that BN removes.
  - θ bias of the dot product before a training-mode BN: it adds (1/N) Σ_j (b_θᵀφ_j) g_j, the same for every i.
  For the dot product and concatenation the φ and g biases do change y_i by an amount that depends on i.
  """
  zero = set()
  if pairwise in SOFTMAX and pairwise != 'gaussian':
    zero.add('phi')
  if norm == 'batch':
    zero.add('out')
    if pairwise in SOFTMAX:
      zero.add('g')
    if pairwise == 'dot_product':
      zero.add('theta')
  return zero


@pytest.mark.parametrize('norm', ['batch', 'affine'])
@pytest.mark.parametrize('pairwise', PAIRWISE)
def test_gradients_flow_after_one_sgd_step(pairwise, norm):
  """At init the output does not depend on θ, φ, g (BN scale 0, or W_z = 0): their gradients are exactly 0.

  One SGD step makes the BN scale (or W_z) non-zero, and then every kernel has a gradient. The step is scaled
  so that the largest parameter change is 0.1, which keeps the new BN scale / W_z far from 0.
  """
  shape, window, extra = GEOMETRIES['3d_spacetime']
  block = NonLocalBlock(pairwise=pairwise, norm=norm, subsample=window)
  rng = np.random.default_rng(seed_of('sgd', pairwise, norm))
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  projection = jnp.asarray(rng.normal(size=(shape[-1], shape[-1])), jnp.float32)
  variables = block.init(jax.random.PRNGKey(2), x)
  params, other = variables['params'], {k: v for k, v in variables.items() if k != 'params'}
  grad_fn = jax.jit(jax.grad(functools.partial(sgd_loss, block)))
  convs = [n for n in ('theta', 'phi', 'g', 'out') if n in params]
  behind_wz = [n for n in ('theta', 'phi', 'g', 'concat_project') if n in params]
  peak = lambda tree: float(jnp.abs(tree).max())

  grads0 = grad_fn(params, other, x, projection)
  for name in behind_wz:
    assert peak(grads0[name]['kernel']) == 0.0, name  # exactly: the path is multiplied by an exact 0
  if norm == 'batch':
    assert peak(grads0['out']['kernel']) == 0.0 and peak(grads0['out']['bias']) == 0.0
    assert peak(grads0['bn']['scale']) > 0.0
  else:
    assert peak(grads0['out']['kernel']) > 0.0

  learning_rate = 0.1 / max_abs(grads0)
  params1 = jax.tree_util.tree_map(lambda p, g: p - learning_rate * g, params, grads0)
  if norm == 'batch':
    assert peak(params1['bn']['scale']) > 0.0
  grads1 = grad_fn(params1, other, x, projection)
  # The same computation gave exactly 0.0 at init, and no kernel gradient is a cancelling sum, so any
  # non-zero value here is the dependence that the step created, not rounding.
  for name in behind_wz + ['out']:
    kernel_grad = np.asarray(grads1[name]['kernel'])
    assert np.all(np.isfinite(kernel_grad)) and np.abs(kernel_grad).max() > 0.0, name

  zero = structurally_zero_biases(pairwise, norm)
  scale = max_abs(grads1)
  for name in convs:
    bias_grad, kernel_grad = peak(grads1[name]['bias']), peak(grads1[name]['kernel'])
    if name in zero:
      # Rounding of a sum that cancels exactly: far below every real gradient of the step.
      assert bias_grad <= 1e-5 * scale, name
    elif name != 'theta':
      # Non-vacuous contrast: where nothing cancels, the bias gradient is of the kernel's order.
      assert bias_grad >= 1e-2 * kernel_grad, name


# --- 3. jit, grad, other input sizes -------------------------------------------------------------------------


def weighted_sum(block, variables, x, weights, train=False):
  if train:
    z, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
  else:
    z = block.apply(variables, x, train=False)
  return jnp.sum(z * weights)


# Training-mode BN on two functions is enough: the attention part does not depend on the mode.
FD_CASES = [(p, False) for p in PAIRWISE] + [('embedded_gaussian', True), ('concatenation', True)]


@pytest.mark.parametrize('pairwise,train', FD_CASES, ids=[f'{p}-{"train" if t else "eval"}' for p, t in FD_CASES])
def test_grad_matches_reference_finite_differences(pairwise, train):
  """jax.grad (in float32) along a random direction of (params, x) against float64 central differences."""
  shape, window, extra = GEOMETRIES['3d_groups']
  block = NonLocalBlock(pairwise=pairwise, subsample=window, implementation='naive', **extra)
  seed = seed_of('fd', pairwise, train)
  rng = np.random.default_rng(seed)
  x = random_input(shape, seed)
  variables = random_variables(block, x, seed + 1)
  weights = rng.normal(size=shape)
  grads = jax.grad(weighted_sum, argnums=(1, 2))(block, variables, jnp.asarray(x), jnp.asarray(weights), train)

  direction = jax.tree_util.tree_map(lambda v: rng.normal(size=v.shape), variables['params'])
  dx = rng.normal(size=shape)
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in
                 zip(jax.tree_util.tree_leaves(grads[0]['params']), jax.tree_util.tree_leaves(direction)))
  analytic += float(np.sum(np.asarray(grads[1], np.float64) * dx))

  def ref_loss(eps):
    params = jax.tree_util.tree_map(lambda p, d: np.asarray(p, np.float64) + eps * d, variables['params'],
                                    direction)
    z, _ = reference.nonlocal_block(x + eps * dx, params, variables['batch_stats'], **reference_kwargs(block),
                                    train=train)
    return float(np.sum(z * weights))

  eps = 1e-5
  numeric = (ref_loss(eps) - ref_loss(-eps)) / (2 * eps)
  assert abs(analytic - numeric) <= 1e-4 * abs(numeric)


def test_jit_matches_eager():
  shape, window, extra = GEOMETRIES['3d_time']
  block = NonLocalBlock(pairwise='embedded_gaussian', subsample=window, **extra)
  x = random_input(shape, 6)
  variables = random_variables(block, x, 7)
  eager = block.apply(variables, x)
  jitted = jax.jit(functools.partial(block.apply, train=False))(variables, x)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


# (geometry, shape at init, shape at apply): other lengths, frames and odd sizes under the same parameters.
OTHER_SIZES = [
    ('1d', (2, 11, 8), (3, 17, 8)),
    ('2d', (2, 6, 5, 8), (1, 9, 7, 8)),
    ('3d_spacetime', (2, 4, 6, 6, 8), (1, 6, 4, 8, 8)),
    ('3d_space', (2, 4, 6, 6, 8), (1, 3, 8, 4, 8)),
    ('3d_time', (2, 4, 6, 6, 8), (1, 7, 3, 2, 8)),
    ('3d_groups', (2, 4, 6, 6, 8), (1, 6, 4, 4, 8)),
]


@pytest.mark.parametrize('pairwise', PAIRWISE)
@pytest.mark.parametrize('geometry,init_shape,apply_shape', OTHER_SIZES, ids=[c[0] for c in OTHER_SIZES])
def test_same_parameters_apply_to_other_sizes(geometry, init_shape, apply_shape, pairwise):
  _, window, extra = GEOMETRIES[geometry]
  block = NonLocalBlock(pairwise=pairwise, subsample=window, **extra)
  variables = random_variables(block, random_input(init_shape, 8), seed_of('sizes', geometry, pairwise))
  x = random_input(apply_shape, seed_of('sizes-x', geometry, pairwise, apply_shape))
  z = _jitted_apply(block)(variables, x)
  z_ref, parts = reference.nonlocal_block(x, variables['params'], variables['batch_stats'],
                                          **reference_kwargs(block))
  assert z.shape == apply_shape
  assert branch_error(z, x, z_ref, parts) <= REL_TOL


@functools.lru_cache(maxsize=None)
def _jitted_apply(block):
  return jax.jit(functools.partial(block.apply, train=False))


# --- 4. Every implementation path equals 'naive' ---------------------------------------------------------------

# (pairwise, implementation, extra arguments). 'auto' is forced onto the chunked path for the non-dot-product
# functions by a tiny affinity budget; for the dot product at these sizes it reassociates. The chunk size, 50,
# does not divide the 72 queries of a group, so the last chunk is padded.
PATHS = [
    ('gaussian', 'chunked', {}), ('gaussian', 'fused', {}), ('gaussian', 'auto', {'max_affinity_bytes': 1}),
    ('embedded_gaussian', 'chunked', {}), ('embedded_gaussian', 'fused', {}),
    ('embedded_gaussian', 'auto', {'max_affinity_bytes': 1}),
    ('dot_product', 'chunked', {}), ('dot_product', 'reassociated', {}), ('dot_product', 'auto', {}),
    ('concatenation', 'chunked', {}), ('concatenation', 'auto', {'max_affinity_bytes': 1}),
]
PATH_GEOMETRY = '3d_groups'  # several groups per batch element: the grouping and the chunking interact


@functools.lru_cache(maxsize=None)
def _value_and_grads(block):
  """The block's output and the gradients of Σ z·w w.r.t. params and input on fixed random data (jitted)."""
  shape, _, _ = GEOMETRIES[PATH_GEOMETRY]
  x = jnp.asarray(random_input(shape, seed_of('paths-x')))
  variables = random_variables(block.clone(implementation='naive'), x, seed_of('paths', block.pairwise))
  weights = jnp.asarray(random_input(shape, 9))

  def loss(variables, x):
    z = block.apply(variables, x, train=False)
    return jnp.sum(z * weights), z

  grads, z = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(variables, x)
  return x, z, grads[0]['params'], grads[1]


@pytest.mark.parametrize('pairwise,implementation,extra', PATHS, ids=[f'{p}-{i}' for p, i, _ in PATHS])
def test_implementation_paths_equal_naive(pairwise, implementation, extra):
  _, window, geo_extra = GEOMETRIES[PATH_GEOMETRY]
  common = dict(pairwise=pairwise, subsample=window, chunk_size=50, **geo_extra)
  x, z_naive, gp_naive, gx_naive = _value_and_grads(NonLocalBlock(implementation='naive', **common))
  _, z, gp, gx = _value_and_grads(NonLocalBlock(implementation=implementation, **common, **extra))
  assert relative_error(z - x, z_naive - x) <= 1e-5
  assert relative_error(gx, gx_naive) <= 1e-5
  scale = max_abs(gp_naive)
  zero = structurally_zero_biases(pairwise, norm='none')  # train=False: only the φ bias of a softmax
  for name in gp_naive:
    for leaf in gp_naive[name]:
      got, want = np.asarray(gp[name][leaf]), np.asarray(gp_naive[name][leaf])
      err = np.abs(got - want).max()
      if leaf == 'bias' and name in zero:
        assert err <= 1e-6 * scale, f'{name}/{leaf}'  # both are rounding noise around an exact 0
      else:
        assert err <= 1e-5 * np.abs(want).max(), f'{name}/{leaf}'


# --- 5. Attention weights in 'intermediates' -------------------------------------------------------------------


# Every geometry with the naive path, plus each frugal path once: the weights are sown whatever computes y.
SOWN_CASES = ([(g, p, 'naive') for g in GEOMETRIES for p in PAIRWISE] +
              [('3d_time', 'gaussian', 'fused'), ('3d_groups', 'embedded_gaussian', 'chunked'),
               ('3d_space', 'dot_product', 'reassociated'), ('2d', 'concatenation', 'chunked')])


@pytest.mark.parametrize('geometry,pairwise,implementation', SOWN_CASES, ids='-'.join)
def test_sown_attention_weights(geometry, pairwise, implementation):
  shape, window, extra = GEOMETRIES[geometry]
  block = NonLocalBlock(pairwise=pairwise, subsample=window, implementation=implementation, chunk_size=5,
                        **extra)
  x = random_input(shape, seed_of('sow', geometry))
  variables = random_variables(block, x, seed_of('sow', pairwise))
  z, state = block.apply(variables, x, train=False, mutable=['intermediates'])
  np.testing.assert_array_equal(z, block.apply(variables, x, train=False))
  (weights,) = state['intermediates']['attention']
  _, parts = reference.nonlocal_block(x, variables['params'], variables['batch_stats'], **reference_kwargs(block))
  # The reference's groups in (batch, group label) order: batch-major, then frames / locations / groups.
  want = np.stack([parts['weights'][key] for key in sorted(parts['weights'])])
  assert weights.shape == want.shape
  assert relative_error(weights, want) <= REL_TOL
  if pairwise in SOFTMAX:
    np.testing.assert_allclose(np.asarray(weights).sum(axis=-1), 1.0, rtol=1e-5)


def test_attention_weights_shape_per_position_set():
  """(B·groups, N_query, N_key) for B = 2, T = 4, H = W = 6, window (1, 2, 2) (or (2, 1, 1) for time)."""
  expected = {'3d_spacetime': (2, 144, 36), '3d_space': (8, 36, 9), '3d_time': (72, 4, 2),
              '3d_groups': (4, 72, 18)}
  for geometry, want in expected.items():
    shape, window, extra = GEOMETRIES[geometry]
    block = NonLocalBlock(subsample=window, **extra)
    x = jnp.ones(shape)
    variables = block.init(jax.random.PRNGKey(0), x)
    _, state = block.apply(variables, x, mutable=['intermediates'])
    assert state['intermediates']['attention'][0].shape == want, geometry


def test_attention_weights_absent_unless_asked_for():
  shape, window, extra = GEOMETRIES['2d']
  block = NonLocalBlock(subsample=window)
  x = jnp.ones(shape)
  variables = block.init(jax.random.PRNGKey(0), x)
  assert set(variables) == {'params', 'batch_stats'}
  assert isinstance(block.apply(variables, x), jax.Array)
  _, state = block.apply(variables, x, train=True, mutable=['batch_stats'])
  assert set(state) == {'batch_stats'}


@pytest.mark.parametrize('pairwise,implementation', [('dot_product', 'reassociated'),
                                                     ('embedded_gaussian', 'chunked'),
                                                     ('concatenation', 'chunked')])
def test_no_affinity_matrix_on_frugal_paths_unless_asked_for(pairwise, implementation):
  """The frugal paths never build an (Nq, Nk) array, forward or backward, unless the weights are requested."""
  x = jnp.ones((1, 2, 8, 8, 8))  # N = 128 queries and keys; chunks of 32 queries
  block = NonLocalBlock(pairwise=pairwise, implementation=implementation, chunk_size=32)
  variables = block.init(jax.random.PRNGKey(0), x)

  def loss(variables, x, mutable):
    out = block.apply(variables, x, mutable=mutable)
    z = out[0] if mutable else out
    return jnp.sum(z ** 2)

  def has_affinity(mutable):
    jaxpr = jax.make_jaxpr(jax.grad(loss), static_argnums=2)(variables, x, mutable)
    return any(tuple(a.shape[-2:]) == (128, 128) for a in _all_avals(jaxpr.jaxpr))

  assert not has_affinity(False)
  assert has_affinity(('intermediates',))  # the probe sees the array when it does exist
  quiet = block.clone(sow_attention=False)
  jaxpr = jax.make_jaxpr(jax.grad(lambda v, x: jnp.sum(quiet.apply(v, x, mutable=['intermediates'])[0] ** 2)))(
      variables, x)
  assert not any(tuple(a.shape[-2:]) == (128, 128) for a in _all_avals(jaxpr.jaxpr))


def _all_avals(jaxpr):
  """Abstract values of every variable in a jaxpr and its sub-jaxprs (scan, checkpoint, custom_vjp, ...)."""
  for eqn in jaxpr.eqns:
    for var in list(eqn.invars) + list(eqn.outvars):
      if hasattr(var, 'aval') and hasattr(var.aval, 'shape'):
        yield var.aval
    for sub in _sub_jaxprs(eqn):
      yield from _all_avals(sub)


def _sub_jaxprs(eqn):
  """The jaxprs held in an equation's parameters (open or closed)."""
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, 'jaxpr') and hasattr(item.jaxpr, 'eqns'):
        yield item.jaxpr
      elif hasattr(item, 'eqns'):
        yield item


# --- 6. bf16 compute -------------------------------------------------------------------------------------------


# Every function on the naive path and on each of its frugal paths.
BF16_CASES = [(p, 'naive') for p in PAIRWISE] + [(p, i) for p, i, _ in PATHS if i != 'auto']


@pytest.mark.parametrize('pairwise,implementation', BF16_CASES, ids='-'.join)
def test_bfloat16_compute(pairwise, implementation):
  shape, window, extra = GEOMETRIES['3d_spacetime']
  block32 = NonLocalBlock(pairwise=pairwise, subsample=window, implementation=implementation, chunk_size=50)
  block16 = block32.clone(dtype=jnp.bfloat16)
  x = random_input(shape, seed_of('bf16', pairwise))
  variables = random_variables(block32, x, seed_of('bf16-vars', pairwise))
  is_float32 = lambda tree: jax.tree_util.tree_all(jax.tree_util.tree_map(lambda v: v.dtype == jnp.float32, tree))
  assert is_float32(jax.eval_shape(block16.init, jax.random.PRNGKey(0), x))
  z16, state = block16.apply(variables, x, train=True, mutable=['batch_stats'])
  z32, _ = block32.apply(variables, x, train=True, mutable=['batch_stats'])
  assert z16.dtype == jnp.bfloat16
  assert is_float32(state)
  # bf16 keeps 8 bits of mantissa; a few roundings of the embeddings and logits stay within a few percent.
  assert relative_error(z16.astype(jnp.float32) - x, z32 - x) <= 5e-2
  if implementation == 'naive':
    z16_eval = block16.apply(variables, x, train=False)
    assert z16_eval.dtype == jnp.bfloat16
    assert relative_error(z16_eval.astype(jnp.float32) - x, block32.apply(variables, x, train=False) - x) <= 5e-2


# --- 7. Bad arguments --------------------------------------------------------------------------------------------

VIDEO = (1, 4, 6, 6, 8)
BAD_ARGUMENTS = [
    ('pairwise', {'pairwise': 'cosine'}, VIDEO, r'pairwise.*embedded_gaussian'),
    ('implementation', {'implementation': 'flash'}, VIDEO, r'implementation.*chunked'),
    ('reassociated-softmax', {'pairwise': 'embedded_gaussian', 'implementation': 'reassociated'}, VIDEO,
     r"implementation='reassociated'.*dot_product"),
    ('reassociated-concat', {'pairwise': 'concatenation', 'implementation': 'reassociated'}, VIDEO,
     r"implementation='reassociated'"),
    ('fused-dot', {'pairwise': 'dot_product', 'implementation': 'fused'}, VIDEO, r"implementation='fused'"),
    ('fused-concat', {'pairwise': 'concatenation', 'implementation': 'fused'}, VIDEO, r"implementation='fused'"),
    ('window-too-big', {'subsample': (1, 8, 8)}, VIDEO, r'subsample'),
    ('window-too-long', {'subsample': (2, 2)}, VIDEO, r'subsample'),
    ('window-too-short', {'subsample': (1, 2, 2)}, (1, 6, 6, 8), r'subsample'),
    ('window-zero', {'subsample': (0, 2, 2)}, VIDEO, r'subsample'),
    ('rank-2', {}, (4, 8), r'rank'),
    ('rank-6', {}, (1, 2, 2, 2, 2, 8), r'rank'),
    ('positions-on-2d', {'positions': 'space'}, (1, 6, 6, 8), r'positions'),
    ('positions-on-1d', {'positions': 'time'}, (1, 6, 8), r'positions'),
    ('positions-unknown', {'positions': 'everywhere'}, VIDEO, r'positions.*spacetime'),
    ('groups-not-dividing', {'temporal_groups': 3}, VIDEO, r'temporal_groups'),
    ('groups-on-2d', {'temporal_groups': 2}, (1, 6, 6, 8), r'temporal_groups'),
    ('space-with-temporal-pool', {'positions': 'space', 'subsample': (2, 2, 2)}, VIDEO,
     r"positions='space'.*subsample"),
    ('time-with-spatial-pool', {'positions': 'time', 'subsample': (1, 2, 2)}, VIDEO,
     r"positions='time'.*subsample"),
    ('pool-position', {'pool_position': 'middle'}, VIDEO, r'pool_position.*before'),
    ('norm', {'norm': 'layer'}, VIDEO, r'norm.*affine'),
    ('weight-init', {'weight_init': 'xavier'}, VIDEO, r'weight_init.*he'),
    ('chunk-size', {'chunk_size': 0}, VIDEO, r'chunk_size'),
    ('inter-channels', {'inter_channels': 0}, VIDEO, r'inter_channels'),
]


@pytest.mark.parametrize('name,kwargs,shape,message', BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error(name, kwargs, shape, message):
  with pytest.raises(ValueError, match=message):
    NonLocalBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))


def test_bad_input_shape_at_apply_raises_value_error():
  # Parameters made for 4 frames meet 6 frames, which 4-frame groups do not divide.
  block = NonLocalBlock(temporal_groups=4)
  variables = block.init(jax.random.PRNGKey(0), jnp.ones(VIDEO))
  with pytest.raises(ValueError, match='temporal_groups'):
    block.apply(variables, jnp.ones((1, 6, 6, 6, 8)))


# --- 8. Initialisation -------------------------------------------------------------------------------------------


def test_he_init_is_fan_out_normal():
  """Caffe2's MSRAFill: N(0, 2 / fan_out), fan_out = C_out of the 1×1 conv, an untruncated normal."""
  x = jnp.zeros((1, 2, 1024))
  variables = NonLocalBlock(weight_init='he').init(jax.random.PRNGKey(3), x)
  for name, fan_out in (('theta', 512), ('phi', 512), ('g', 512), ('out', 1024)):
    w = np.asarray(variables['params'][name]['kernel'], np.float64).ravel()
    std = np.sqrt(2.0 / fan_out)
    # 524288 samples: the sample std is within 0.1% (1 s.e.) of the truth; the fan-in std would be 41% off.
    assert abs(w.std() / std - 1) < 1e-2, name
    assert abs(w.mean()) < 5 * std / np.sqrt(w.size), name
    # 4.55% of a normal lies beyond 2σ; a normal truncated at 2σ would put none there.
    assert 0.042 < np.mean(np.abs(w) > 2 * std) < 0.049, name
    np.testing.assert_array_equal(variables['params'][name]['bias'], 0.0)


def test_official_init():
  x = jnp.zeros((1, 2, 1024))
  params = NonLocalBlock().init(jax.random.PRNGKey(4), x)['params']
  for name in ('theta', 'phi', 'g', 'out'):
    w = np.asarray(params[name]['kernel'], np.float64)
    assert abs(w.std() / 0.01 - 1) < 1e-2, name
    np.testing.assert_array_equal(params[name]['bias'], 0.0)
  np.testing.assert_array_equal(params['bn']['scale'], 0.0)
  np.testing.assert_array_equal(params['bn']['bias'], 0.0)
  stats = NonLocalBlock().init(jax.random.PRNGKey(4), x)['batch_stats']['bn']
  np.testing.assert_array_equal(stats['mean'], 0.0)
  np.testing.assert_array_equal(stats['var'], 1.0)
  concat = NonLocalBlock(pairwise='concatenation').init(jax.random.PRNGKey(5), x)['params']['concat_project']
  assert abs(np.asarray(concat['kernel']).std() / 0.01 - 1) < 0.1  # 1024 samples: s.e. 2.2%


@pytest.mark.parametrize('norm', ['affine', 'none'])
def test_frozen_bn_init_zeroes_w_z(norm):
  params = NonLocalBlock(norm=norm).init(jax.random.PRNGKey(6), jnp.zeros((1, 2, 64)))['params']
  np.testing.assert_array_equal(params['out']['kernel'], 0.0)
  assert float(jnp.abs(params['theta']['kernel']).max()) > 0
  if norm == 'affine':
    np.testing.assert_array_equal(params['bn']['scale'], 1.0)
    np.testing.assert_array_equal(params['bn']['bias'], 0.0)
