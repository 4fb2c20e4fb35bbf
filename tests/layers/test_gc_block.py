"""Tests of ``nonlocal_jax.layers.GCBlock`` (issue 17) against a float64 NumPy reference of GCNet's equations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import GCBlock
from tests.layers.family_helpers import (REL_TOL, as64, branch_error, gradient_flags, random_input,
                                         randomize, relative_error, seed_of, softmax64)

SHAPES = {'1d': (2, 11, 8), '2d': (2, 6, 5, 8), '3d': (2, 3, 5, 4, 8)}


def reference(x, params, reduction, use_bias, eps=1e-5):
  """GCNet's block in float64: z_i = x_i + W_v2 ReLU(LN(W_v1 Σ_j softmax_j(W_k x_j) x_j)); also returns α."""
  x = np.asarray(x, np.float64)
  p = as64(params)
  b, c = x.shape[0], x.shape[-1]
  assert p['bottleneck']['kernel'].shape == (c, max(1, c // reduction))
  xs = x.reshape(b, -1, c)
  alpha = softmax64(xs @ p['mask']['kernel'][:, 0])                       # (B, N)
  context = np.einsum('bn,bnc->bc', alpha, xs)                            # (B, C)
  h = context @ p['bottleneck']['kernel'] + (p['bottleneck']['bias'] if use_bias else 0)
  h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps)
  h = np.maximum(h * p['ln']['scale'] + p['ln']['bias'], 0)
  delta = h @ p['expand']['kernel'] + (p['expand']['bias'] if use_bias else 0)
  return x + delta.reshape((b,) + (1,) * (x.ndim - 2) + (c,)), alpha


def random_variables(block, x, seed):
  return randomize(block.init(jax.random.PRNGKey(0), x), seed)


# Widths C // r = 8, 4, 2 (at width 1 the LayerNorm's output is its bias: nothing left to check).
@pytest.mark.parametrize('rank,reduction,use_bias', [('1d', 1, True), ('2d', 2, False), ('3d', 4, True),
                                                     ('3d', 2, False)])
def test_matches_reference(rank, reduction, use_bias):
  block = GCBlock(reduction=reduction, use_bias=use_bias)
  seed = seed_of('gc', rank, reduction, use_bias)
  x = random_input(SHAPES[rank], seed)
  variables = random_variables(block, x, seed)
  z, state = block.apply(variables, x, mutable=['intermediates'])
  z_ref, alpha = reference(x, variables['params'], reduction, use_bias)
  assert z.shape == x.shape and z.dtype == jnp.float32
  assert branch_error(z, x, z_ref) <= REL_TOL
  assert relative_error(state['intermediates']['attention'][0], alpha) <= REL_TOL


def test_parameter_names_and_shapes():
  params = GCBlock(reduction=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 16)))['params']
  shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
  assert shapes == {'mask': {'kernel': (16, 1)}, 'bottleneck': {'kernel': (16, 4), 'bias': (4,)},
                    'ln': {'scale': (4,), 'bias': (4,)}, 'expand': {'kernel': (4, 16), 'bias': (16,)}}
  no_bias = GCBlock(reduction=4, use_bias=False).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 16)))['params']
  assert 'bias' not in no_bias['bottleneck'] and 'bias' not in no_bias['expand']


@pytest.mark.parametrize('rank,weight_init', [('1d', 'official'), ('2d', 'he'), ('3d', 'official')])
def test_identity_at_init_and_only_w_v2_learns_first(rank, weight_init):
  block = GCBlock(reduction=2, weight_init=weight_init)
  x = jnp.asarray(random_input(SHAPES[rank], seed_of('gc-id', rank)))
  variables = block.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(block.apply(variables, x), x)
  flags = gradient_flags(block, variables, x, 7)
  assert all(finite for finite, _ in flags.values())
  # W_v2 starts at 0: it (and its bias) get a gradient; what lies before it does not until it moves.
  assert flags['expand/kernel'][1] and flags['expand/bias'][1]
  assert not flags['bottleneck/kernel'][1] and not flags['mask/kernel'][1]


def test_every_parameter_gets_a_finite_gradient_once_w_v2_moves():
  block = GCBlock(reduction=2)
  x = jnp.asarray(random_input(SHAPES['3d'], 11))
  variables = random_variables(block, x, 12)
  flags = gradient_flags(block, variables, x, 13)
  assert flags and all(finite and nonzero for finite, nonzero in flags.values()), flags


def test_jit_matches_eager():
  block = GCBlock(reduction=2)
  x = random_input(SHAPES['3d'], 21)
  variables = random_variables(block, x, 22)
  eager = block.apply(variables, x)
  jitted = jax.jit(lambda v, x: block.apply(v, x, train=True))(variables, x)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('init_shape,apply_shape', [((2, 4, 6, 6, 8), (1, 3, 5, 7, 8)), ((2, 6, 8), (3, 13, 8))])
def test_same_parameters_apply_to_other_sizes(init_shape, apply_shape):
  block = GCBlock(reduction=2)
  variables = random_variables(block, random_input(init_shape, 31), 32)
  x = random_input(apply_shape, 33)
  z = block.apply(variables, x)
  assert branch_error(z, x, reference(x, variables['params'], 2, True)[0]) <= REL_TOL


def test_bfloat16_compute_keeps_a_float32_softmax():
  block = GCBlock(reduction=2, dtype=jnp.bfloat16)
  x = random_input(SHAPES['2d'], 41)
  variables = random_variables(block, x, 42)
  z, state = block.apply(variables, x, mutable=['intermediates'])
  assert z.dtype == jnp.bfloat16
  weights = state['intermediates']['attention'][0]
  assert weights.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  assert branch_error(np.asarray(z, np.float32), x, reference(x, variables['params'], 2, True)[0]) < 5e-2


@pytest.mark.parametrize('weight_init', ['official', 'he'])
def test_initialisation(weight_init):
  params = GCBlock(weight_init=weight_init).init(jax.random.PRNGKey(5), jnp.zeros((1, 2, 1024)))['params']
  # official: N(0, 0.01²); he: W_k (1024 -> 1) fan-in, std √(2/1024), and W_v1 (1024 -> 64) fan-out, √(2/64).
  for name, he_std, size in (('mask', (2 / 1024) ** 0.5, 1024), ('bottleneck', (2 / 64) ** 0.5, 65536)):
    w = np.asarray(params[name]['kernel'], np.float64)
    std = 0.01 if weight_init == 'official' else he_std
    assert abs(w.std() / std - 1) < 5 / size ** 0.5, name  # 5 standard errors of a sample std (≈ 1/√(2n))
  np.testing.assert_array_equal(params['expand']['kernel'], 0.0)
  np.testing.assert_array_equal(params['bottleneck']['bias'], 0.0)
  np.testing.assert_array_equal(params['ln']['scale'], 1.0)


BAD_ARGUMENTS = [
    ('reduction', {'reduction': 0}, (1, 4, 4, 8), r'reduction must be a positive integer'),
    ('weight_init', {'weight_init': 'xavier'}, (1, 4, 4, 8), r"weight_init must be one of \('official', 'he'\)"),
    ('ln_epsilon', {'ln_epsilon': 0.0}, (1, 4, 4, 8), r'ln_epsilon must be a positive number'),
    ('rank-0', {}, (4, 8), r'GCBlock expects channels-last input of rank 3, 4, 5'),
    ('rank-4', {}, (1, 2, 2, 2, 2, 8), r'GCBlock expects channels-last input'),
]


@pytest.mark.parametrize('name,kwargs,shape,message', BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error(name, kwargs, shape, message):
  with pytest.raises(ValueError, match=message):
    GCBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))


def test_check_without_input_names_the_rank():
  with pytest.raises(ValueError, match='input_rank'):
    GCBlock().check(4)
