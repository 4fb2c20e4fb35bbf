"""Tests of ``nonlocal_jax.layers.NonLocalBlock`` (issue 2): its values and gradients.

The block is checked against the independent float64 NumPy reference in ``tests/layers/reference.py`` over
every pairwise function × pool position × subsampling × position set, then for identity at initialisation, its
parameters and gradients after one SGD step. The implementation paths, jit and bf16 are in
``test_nonlocal_block_paths.py``; the sown attention weights, argument errors and initialisation in
``test_nonlocal_block_api.py``.

Most checks run eagerly on tiny shapes: that costs less than compiling one program per parametrised case.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import NonLocalBlock
from tests.layers import reference
from tests.layers.nonlocal_helpers import (GEOMETRIES, PAIRWISE, REL_TOL, branch_error, max_abs, random_input,
                                           random_variables, reference_kwargs, seed_of, structurally_zero_biases)


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
