"""Tests of ``nonlocal_jax.layers.double_attention_block.DoubleAttentionBlock`` (issue 17).

The reference below is an independent float64 NumPy transcription of the paper's two steps, one descriptor and one
position at a time: descriptor j is the sum of the features weighted by attention map j's softmax over positions,
and position i's output the sum of the descriptors weighted by its softmax over descriptors.
Tiny shapes, mostly eager.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers.double_attention_block import DoubleAttentionBlock
from tests.layers.family_helpers import (REL_TOL, assert_bfloat16_compute, directional_derivatives, random_input,
                                         relative_error, seed_of)

SHAPES = {'1d': (2, 7, 8), '2d': (2, 3, 4, 8), '3d': (2, 2, 3, 2, 8)}


def randomize(variables, seed):
  """Every parameter random: kernels of std 1/sqrt(fan_in) (softmaxes neither flat nor one-hot), non-zero biases."""
  rng = np.random.default_rng(seed)

  def leaf(path, value):
    std = value.shape[0] ** -0.5 if path[-1].key == 'kernel' else 0.3
    return jnp.asarray(rng.normal(0.0, std, value.shape), value.dtype)

  return jax.tree_util.tree_map_with_path(leaf, variables)


def softmax(v):
  e = np.exp(v - v.max())
  return e / e.sum()


def reference(x, params):
  """z of the block in float64, from the paper's gathering and distribution steps."""
  x = np.asarray(x, np.float64)
  p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}
  conv = lambda t, name: t @ p[name]['kernel'] + p[name].get('bias', 0.0)
  batch, channels = x.shape[0], x.shape[-1]
  positions = x.reshape(batch, -1, channels)
  z = np.zeros_like(positions)
  for b in range(batch):
    features, maps, vectors = conv(positions[b], 'phi'), conv(positions[b], 'theta'), conv(positions[b], 'rho')
    n_descriptors = maps.shape[1]
    # Gathering: descriptor j = Σ_i softmax_i(B_j)_i A_i.
    descriptors = [sum(w * a for w, a in zip(softmax(maps[:, j]), features)) for j in range(n_descriptors)]
    for i in range(positions.shape[1]):
      # Distribution: z_i = Σ_j softmax_j(V_i)_j G_j.
      mixed = sum(w * d for w, d in zip(softmax(vectors[i]), descriptors))
      z[b, i] = positions[b, i] + conv(mixed, 'out')
  return z.reshape(x.shape)


# --- Against the float64 reference ------------------------------------------------------------------------------

WIDTHS = {'default': {}, 'n3m5': {'descriptors': 3, 'descriptor_channels': 5},
          'n6m2-nobias': {'descriptors': 6, 'descriptor_channels': 2, 'use_bias': False}}
CASES = [(r, w) for r in SHAPES for w in WIDTHS]


@pytest.mark.parametrize('rank,widths', CASES, ids=['-'.join(c) for c in CASES])
def test_matches_reference(rank, widths):
  block = DoubleAttentionBlock(**WIDTHS[widths])
  x = random_input(SHAPES[rank], seed_of('x', rank, widths))
  variables = randomize(block.init(jax.random.PRNGKey(0), x), seed_of('v', rank, widths))
  z = block.apply(variables, x)
  z_ref = reference(x, variables['params'])
  assert z.shape == x.shape and z.dtype == jnp.float32
  assert relative_error(z - x, z_ref - x) <= REL_TOL


def test_softmax_axes_are_the_papers():
  """A fault that swaps the normalisation of the distribution (over positions instead of descriptors) is seen."""
  block = DoubleAttentionBlock(descriptors=3, descriptor_channels=4)
  x = random_input(SHAPES['2d'], 1)
  variables = randomize(block.init(jax.random.PRNGKey(1), x), 2)
  p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), variables['params'])
  positions = np.asarray(x, np.float64).reshape(2, -1, 8)
  b = 0
  features = positions[b] @ p['phi']['kernel'] + p['phi']['bias']
  maps = positions[b] @ p['theta']['kernel'] + p['theta']['bias']
  vectors = positions[b] @ p['rho']['kernel'] + p['rho']['bias']
  gathered = np.stack([softmax(maps[:, j]) @ features for j in range(3)])
  wrong = np.stack([softmax(vectors[:, j]) for j in range(3)], axis=1) @ gathered  # softmax over positions
  wrong_z = positions[b] + wrong @ p['out']['kernel'] + p['out']['bias']
  z = np.asarray(block.apply(variables, x), np.float64).reshape(2, -1, 8)[b]
  assert relative_error(z - positions[b], reference(x, variables['params']).reshape(2, -1, 8)[b] - positions[b]) \
      <= REL_TOL
  assert relative_error(z - positions[b], wrong_z - positions[b]) > 100 * REL_TOL


# --- Identity at initialisation, parameters ---------------------------------------------------------------------


@pytest.mark.parametrize('rank', list(SHAPES))
def test_identity_at_init(rank):
  block = DoubleAttentionBlock()
  x = random_input(SHAPES[rank], 3)
  variables = block.init(jax.random.PRNGKey(2), x)
  np.testing.assert_array_equal(block.apply(variables, x), x)
  np.testing.assert_array_equal(variables['params']['out']['kernel'], 0.0)


@pytest.mark.parametrize('use_bias', [True, False])
def test_parameter_names_and_shapes(use_bias):
  x = jnp.zeros((1, 2, 4, 4, 12))
  variables = jax.eval_shape(DoubleAttentionBlock(descriptors=5, use_bias=use_bias).init, jax.random.PRNGKey(0), x)
  shapes = {'/'.join(p.key for p in path): tuple(v.shape)
            for path, v in jax.tree_util.tree_leaves_with_path(variables['params'])}
  kernels = {'phi': (12, 3), 'theta': (12, 5), 'rho': (12, 5), 'out': (3, 12)}
  want = {f'{k}/kernel': s for k, s in kernels.items()}
  if use_bias:
    want.update({f'{k}/bias': s[1:] for k, s in kernels.items()})
  assert shapes == want
  assert set(variables) == {'params'}


# --- jit, grad, other sizes, bf16 -------------------------------------------------------------------------------


def test_jit_matches_eager():
  block = DoubleAttentionBlock(descriptors=3)
  x = random_input(SHAPES['3d'], 4)
  variables = randomize(block.init(jax.random.PRNGKey(3), x), 5)
  jitted = jax.jit(functools.partial(block.apply, train=True))(variables, x)
  np.testing.assert_allclose(jitted, block.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_grad_matches_reference_finite_differences():
  """jax.grad (float32) along a random direction of (params, x) against float64 central differences."""
  block = DoubleAttentionBlock(descriptors=3, descriptor_channels=4)
  shape = SHAPES['3d']
  rng = np.random.default_rng(6)
  x = random_input(shape, 7)
  variables = randomize(block.init(jax.random.PRNGKey(4), x), 8)
  weights = rng.normal(size=shape)
  loss = lambda v, x: jnp.sum(block.apply(v, x) * weights)
  grads = jax.grad(loss, argnums=(0, 1))(variables, jnp.asarray(x))
  reference_loss = lambda params, x: float(np.sum(reference(x, params) * weights))
  analytic, numeric = directional_derivatives(grads, variables, x, reference_loss, rng)
  assert abs(analytic - numeric) <= 1e-4 * abs(numeric)


def test_gradients_at_init_reach_the_projection_only():
  """W_out = 0: exactly no gradient reaches φ, θ, ρ; W_out gets one, and after one step all do."""
  block = DoubleAttentionBlock(descriptors=3)
  x = jnp.asarray(random_input(SHAPES['3d'], 9))
  projection = jnp.asarray(random_input((8, 8), 10))
  variables = block.init(jax.random.PRNGKey(5), x)
  loss = jax.jit(jax.grad(lambda v: jnp.sum((block.apply(v, x) @ projection) ** 2)))
  grads = loss(variables)['params']
  for name in ('phi', 'theta', 'rho'):
    assert float(jnp.abs(grads[name]['kernel']).max()) == 0.0, name
  assert float(jnp.abs(grads['out']['kernel']).max()) > 0
  stepped = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g / float(jnp.abs(g).max() + 1e-30), variables,
                                   {'params': grads})
  grads = loss(stepped)['params']
  for name in ('phi', 'theta', 'rho'):
    assert np.all(np.isfinite(grads[name]['kernel'])) and float(jnp.abs(grads[name]['kernel']).max()) > 0, name


SIZES = [('1d', (3, 13, 8)), ('2d', (1, 5, 2, 8)), ('3d', (1, 3, 4, 5, 8))]


@pytest.mark.parametrize('rank,apply_shape', SIZES, ids=[s[0] for s in SIZES])
def test_same_parameters_apply_to_other_sizes(rank, apply_shape):
  block = DoubleAttentionBlock(descriptors=3)
  variables = randomize(block.init(jax.random.PRNGKey(6), random_input(SHAPES[rank], 1)), seed_of('sizes', rank))
  x = random_input(apply_shape, seed_of('sizes-x', rank))
  z = jax.jit(block.apply)(variables, x)
  assert z.shape == apply_shape
  assert relative_error(z - x, reference(x, variables['params']) - x) <= REL_TOL


def test_bfloat16_compute():
  block32 = DoubleAttentionBlock(descriptors=3)
  x = random_input(SHAPES['3d'], 11)
  assert_bfloat16_compute(block32, x, randomize(block32.init(jax.random.PRNGKey(7), x), 12))


# --- Bad arguments ----------------------------------------------------------------------------------------------

BAD = [
    ('descriptors', {'descriptors': 0}, (1, 4, 4, 8), r'descriptors must be'),
    ('descriptors-float', {'descriptors': 2.0}, (1, 4, 4, 8), r'descriptors must be'),
    ('descriptor-channels', {'descriptor_channels': -1}, (1, 4, 4, 8), r'descriptor_channels'),
    ('use-bias', {'use_bias': 'yes'}, (1, 4, 4, 8), r'use_bias'),
    ('rank-2', {}, (4, 8), r'rank'),
    ('rank-6', {}, (1, 2, 2, 2, 2, 8), r'rank'),
]


@pytest.mark.parametrize('name,kwargs,shape,message', BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_raise_value_error(name, kwargs, shape, message):
  with pytest.raises(ValueError, match=message):
    DoubleAttentionBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))


def test_check_without_input():
  DoubleAttentionBlock(descriptors=4).check(3)
  with pytest.raises(ValueError, match='input_rank'):
    DoubleAttentionBlock().check(0)
