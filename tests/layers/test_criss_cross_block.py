"""Tests of ``nonlocal_jax.layers.CrissCrossBlock`` (issue 17) against a float64 NumPy reference of CCNet's
equations that enumerates each position's criss-cross set explicitly."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import CrissCrossBlock
from tests.layers.family_helpers import (REL_TOL, as64, branch_error, gradient_flags, random_input,
                                         randomize, relative_error, seed_of, softmax64)

SHAPES = {'1d': (2, 7, 8), '2d': (2, 4, 5, 8), '3d': (1, 3, 4, 5, 8)}


def criss_cross_set(u, spatial):
  """The positions u attends to: the line through u along every axis, u itself once (listed first)."""
  keys = [u]
  for axis, n in enumerate(spatial):
    keys += [u[:axis] + (i,) + u[axis + 1:] for i in range(n) if i != u[axis]]
  return keys


def reference(x, params, recurrence, use_bias):
  """R steps of H'_u = H_u + γ Σ_{v ∈ Ω_u} softmax_v(Q_u · K_v) V_v in float64; the last step's weights too."""
  p = as64(params)
  dense = lambda h, name: h @ p[name]['kernel'] + (p[name]['bias'] if use_bias else 0)
  h = np.asarray(x, np.float64)
  spatial = h.shape[1:-1]
  for _ in range(recurrence):
    q, k, v = dense(h, 'query'), dense(h, 'key'), dense(h, 'value')
    out = np.zeros_like(h)
    weights = {}
    for b in range(h.shape[0]):
      for u in itertools.product(*(range(n) for n in spatial)):
        keys = criss_cross_set(u, spatial)
        assert len(set(keys)) == len(keys) == sum(spatial) - len(spatial) + 1
        a = softmax64(np.array([q[(b,) + u] @ k[(b,) + j] for j in keys]))
        out[(b,) + u] = sum(w * v[(b,) + j] for w, j in zip(a, keys))
        weights[(b,) + u] = dict(zip(keys, a))
    h = h + p['gamma'] * out
  return h, weights


def random_variables(block, x, seed):
  return randomize(block.init(jax.random.PRNGKey(0), x), seed)


@pytest.mark.parametrize('rank,recurrence,inter,use_bias', [('1d', 1, None, True), ('2d', 2, 2, True),
                                                            ('2d', 1, 4, False), ('3d', 2, 3, True),
                                                            ('3d', 3, None, False)])
def test_matches_reference(rank, recurrence, inter, use_bias):
  block = CrissCrossBlock(inter_channels=inter, recurrence=recurrence, use_bias=use_bias)
  seed = seed_of('cc', rank, recurrence, inter, use_bias)
  x = random_input(SHAPES[rank], seed)
  variables = random_variables(block, x, seed)
  z = block.apply(variables, x)
  z_ref, _ = reference(x, variables['params'], recurrence, use_bias)
  assert z.shape == x.shape and z.dtype == jnp.float32
  assert branch_error(z, x, z_ref) <= REL_TOL


def test_sown_weights_count_the_query_once():
  block = CrissCrossBlock(inter_channels=2, recurrence=1)
  x = random_input(SHAPES['3d'], 3)
  variables = random_variables(block, x, 4)
  _, state = block.apply(variables, x, mutable=['intermediates'])
  (weights,) = state['intermediates']['attention']
  t, h, w = SHAPES['3d'][1:4]
  assert weights.shape == (1, t, h, w, t + h + w) and weights.dtype == jnp.float32
  _, want = reference(x, variables['params'], 1, True)
  for u in [(0, 0, 0), (1, 2, 3), (2, 3, 4)]:
    got = np.asarray(weights[(0,) + u])
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-6)
    # Layout: the time line (u included), then the column, then the row, u's own entry in those two at 0.
    assert got[t + u[1]] == 0 and got[t + h + u[2]] == 0
    lines = [(i, u[1], u[2]) for i in range(t)] + [(u[0], i, u[2]) for i in range(h)] + \
            [(u[0], u[1], i) for i in range(w)]
    expected = [want[(0,) + u].get(j, 0.0) if n < t or j != u else 0.0 for n, j in enumerate(lines)]
    assert relative_error(got, expected) <= REL_TOL


def test_parameter_names_and_shapes():
  params = CrissCrossBlock().init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 16)))['params']
  shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
  assert shapes == {'query': {'kernel': (16, 2), 'bias': (2,)}, 'key': {'kernel': (16, 2), 'bias': (2,)},
                    'value': {'kernel': (16, 16), 'bias': (16,)}, 'gamma': ()}


@pytest.mark.parametrize('rank,weight_init', [('1d', 'he'), ('3d', 'official')])
def test_identity_at_init_and_gamma_learns_first(rank, weight_init):
  block = CrissCrossBlock(inter_channels=2, weight_init=weight_init)
  x = jnp.asarray(random_input(SHAPES[rank], seed_of('cc-id', rank)))
  variables = block.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(block.apply(variables, x), x)
  flags = gradient_flags(block, variables, x, 7)
  assert all(finite for finite, _ in flags.values())
  assert flags['gamma'][1] and not flags['query/kernel'][1] and not flags['value/kernel'][1]


def test_every_parameter_gets_a_finite_gradient_once_gamma_moves():
  block = CrissCrossBlock(inter_channels=2)
  x = jnp.asarray(random_input(SHAPES['3d'], 11))
  variables = random_variables(block, x, 12)
  flags = gradient_flags(block, variables, x, 13)
  assert flags and all(finite and nonzero for finite, nonzero in flags.values()), flags


def test_jit_matches_eager():
  block = CrissCrossBlock(inter_channels=2)
  x = random_input(SHAPES['2d'], 21)
  variables = random_variables(block, x, 22)
  np.testing.assert_allclose(jax.jit(block.apply)(variables, x), block.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_same_parameters_apply_to_other_sizes():
  block = CrissCrossBlock(inter_channels=2)
  variables = random_variables(block, random_input((2, 4, 4, 4, 8), 31), 32)
  x = random_input((1, 2, 3, 5, 8), 33)
  assert branch_error(block.apply(variables, x), x, reference(x, variables['params'], 2, True)[0]) <= REL_TOL


def test_bfloat16_compute():
  block = CrissCrossBlock(inter_channels=2, dtype=jnp.bfloat16)
  x = random_input(SHAPES['2d'], 41)
  variables = random_variables(block, x, 42)
  z, state = block.apply(variables, x, mutable=['intermediates'])
  assert z.dtype == jnp.bfloat16 and state['intermediates']['attention'][0].dtype == jnp.float32
  assert branch_error(np.asarray(z, np.float32), x, reference(x, variables['params'], 2, True)[0]) < 5e-2


BAD_ARGUMENTS = [
    ('recurrence', {'recurrence': 0}, (1, 4, 4, 8), r'recurrence must be a positive integer'),
    ('inter_channels', {'inter_channels': 0}, (1, 4, 4, 8), r'inter_channels must be a positive integer or None'),
    ('gamma_init', {'gamma_init': 'zero'}, (1, 4, 4, 8), r'gamma_init must be a number'),
    ('weight_init', {'weight_init': 'xavier'}, (1, 4, 4, 8), r'weight_init must be one of'),
    ('rank', {}, (4, 8), r'CrissCrossBlock expects channels-last input of rank 3, 4, 5'),
]


@pytest.mark.parametrize('name,kwargs,shape,message', BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error(name, kwargs, shape, message):
  with pytest.raises(ValueError, match=message):
    CrissCrossBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))
