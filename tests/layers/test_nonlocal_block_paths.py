"""Tests of ``NonLocalBlock``'s computation paths: grad against float64 finite differences, jit, other input
sizes under the same parameters, every implementation path against 'naive', and bf16 compute."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import NonLocalBlock
from tests.layers import reference
from tests.layers.family_helpers import directional_derivatives
from tests.layers.nonlocal_helpers import (GEOMETRIES, PAIRWISE, REL_TOL, branch_error, max_abs, random_input,
                                           random_variables, reference_kwargs, relative_error, seed_of,
                                           structurally_zero_biases)


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

  def reference_loss(params, x):
    z, _ = reference.nonlocal_block(x, params, variables['batch_stats'], **reference_kwargs(block), train=train)
    return float(np.sum(z * weights))

  analytic, numeric = directional_derivatives(grads, variables, x, reference_loss, rng)
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
    ('gaussian', 'chunked', {}), ('gaussian', 'fused', {}), ('gaussian', 'lean', {}),
    ('gaussian', 'auto', {'max_affinity_bytes': 1}),
    ('embedded_gaussian', 'chunked', {}), ('embedded_gaussian', 'fused', {}), ('embedded_gaussian', 'lean', {}),
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
