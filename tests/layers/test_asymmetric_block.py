"""Tests of ``nonlocal_jax.layers.AsymmetricPyramidBlock`` (issue 17) against a float64 NumPy reference of the
APNB equations (Zhu et al. 2019) that pools every anchor bin by explicit slicing."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import AsymmetricPyramidBlock
from tests.layers.family_helpers import (REL_TOL, as64, batch_norm64, branch_error, gradient_flags,
                                         random_input, randomize, relative_error, seed_of, softmax64)

SHAPES = {'1d': (2, 11, 8), '2d': (2, 7, 5, 8), '3d': (2, 3, 7, 6, 8)}


def bin_slices(length, n):
  """Adaptive average pooling's bins, as the paper's PSP pooling in PyTorch: [⌊iL/n⌋, ⌈(i+1)L/n⌉)."""
  return [slice(math.floor(i * length / n), math.ceil((i + 1) * length / n)) for i in range(n)]


def anchors(x, bins, temporal_bins):
  """(B, S, C): every pyramid bin's mean, per frame (or per time bin) in 3D."""
  spatial = x.shape[1:-1]
  out = []
  for n in bins:
    if len(spatial) == 3:
      times = ([slice(t, t + 1) for t in range(spatial[0])] if temporal_bins is None
               else bin_slices(spatial[0], temporal_bins))
      per_axis = [times] + [bin_slices(s, n) for s in spatial[1:]]
    else:
      per_axis = [bin_slices(s, n) for s in spatial]
    for cell in itertools.product(*per_axis):
      out.append(x[(slice(None),) + cell].reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1))
  return np.stack(out, axis=1)


def reference(x, variables, bins=(1, 3, 6, 8), temporal_bins=None, scale=True, fusion='sum', norm='batch',
              use_bias=True, eps=1e-5):
  """APNB in float64: softmax(s θᵀ φ_P) γ_P, W_z, the norm, then x + · or W_f [·; x] + b_f; also the weights."""
  x = np.asarray(x, np.float64)
  p = as64(variables['params'])
  dense = lambda h, name: h @ p[name]['kernel'] + (p[name]['bias'] if use_bias else 0)
  b, c = x.shape[0], x.shape[-1]
  a = anchors(x, bins, temporal_bins)
  q = dense(x.reshape(b, -1, c), 'theta')
  inter = q.shape[-1]
  logits = np.einsum('bnc,bsc->bns', q, dense(a, 'phi')) * (inter ** -0.5 if scale else 1.0)
  weights = softmax64(logits)
  y = np.einsum('bns,bsc->bnc', weights, dense(a, 'g'))
  wz = dense(y, 'out')
  if norm == 'batch':
    wz = batch_norm64(wz, p['bn'], as64(variables['batch_stats'])['bn'], eps)
  elif norm == 'affine':
    wz = wz * p['bn']['scale'] + p['bn']['bias']
  wz = wz.reshape(x.shape)
  z = wz + x if fusion == 'sum' else dense(np.concatenate([wz, x], axis=-1), 'fuse')
  return z, weights


def random_variables(block, x, seed):
  return randomize(block.init(jax.random.PRNGKey(0), x), seed)


CASES = [
    ('1d', {}),
    ('2d', {}),
    ('2d', {'bins': (2, 4), 'scale': False, 'fusion': 'concat', 'norm': 'affine'}),
    ('2d', {'bins': (1, 9), 'inter_channels': 3, 'use_bias': False, 'norm': 'none'}),  # 9 bins > 7 rows, 5 cols
    ('3d', {}),
    ('3d', {'temporal_bins': 2, 'bins': (1, 3), 'fusion': 'concat'}),
    ('3d', {'temporal_bins': 1, 'norm': 'none'}),
]


@pytest.mark.parametrize('rank,kwargs', CASES, ids=[f'{r}-{"-".join(map(str, k.values()))}' for r, k in CASES])
def test_matches_reference(rank, kwargs):
  block = AsymmetricPyramidBlock(**kwargs)
  seed = seed_of('apnb', rank, sorted(kwargs.items()))
  x = random_input(SHAPES[rank], seed)
  variables = random_variables(block, x, seed)
  z, state = block.apply(variables, x, mutable=['intermediates'])
  ref_kwargs = {k: v for k, v in kwargs.items() if k != 'inter_channels'}
  z_ref, weights = reference(x, variables, **ref_kwargs)
  assert z.shape == x.shape and z.dtype == jnp.float32
  assert branch_error(z, x, z_ref) <= REL_TOL
  assert state['intermediates']['attention'][0].shape == weights.shape
  assert weights.shape[-1] == block.num_anchors(SHAPES[rank][1:-1])
  assert relative_error(state['intermediates']['attention'][0], weights) <= REL_TOL


def test_the_papers_pyramid_has_110_anchors_per_frame():
  block = AsymmetricPyramidBlock()
  assert block.num_anchors((28, 28)) == 110
  assert block.num_anchors((4, 14, 14)) == 440
  assert AsymmetricPyramidBlock(temporal_bins=1).num_anchors((4, 14, 14)) == 110
  assert block.num_anchors((56,)) == 18


def test_train_mode_batch_norm_uses_batch_statistics():
  block = AsymmetricPyramidBlock(bins=(1, 2))
  x = random_input(SHAPES['2d'], 51)
  variables = random_variables(block, x, 52)
  z, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
  # The reference with the running statistics replaced by this batch's (biased) statistics of W_z y.
  p = as64(variables['params'])
  b, c = x.shape[0], x.shape[-1]
  x64 = np.asarray(x, np.float64)
  a = anchors(x64, (1, 2), None)
  q = x64.reshape(b, -1, c) @ p['theta']['kernel'] + p['theta']['bias']
  w = softmax64(np.einsum('bnc,bsc->bns', q, a @ p['phi']['kernel'] + p['phi']['bias']) * q.shape[-1] ** -0.5)
  wz = np.einsum('bns,bsc->bnc', w, a @ p['g']['kernel'] + p['g']['bias']) @ p['out']['kernel'] + p['out']['bias']
  stats = {'mean': wz.reshape(-1, c).mean(0), 'var': wz.reshape(-1, c).var(0)}
  z_ref = batch_norm64(wz, p['bn'], stats, 1e-5).reshape(x.shape) + x64
  assert branch_error(z, x, z_ref) <= REL_TOL


def test_parameter_names_and_shapes():
  x = jnp.zeros((1, 3, 3, 16))
  params = AsymmetricPyramidBlock(fusion='concat').init(jax.random.PRNGKey(0), x)['params']
  shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
  dense = lambda i, o: {'kernel': (i, o), 'bias': (o,)}
  assert shapes == {'theta': dense(16, 8), 'phi': dense(16, 8), 'g': dense(16, 8), 'out': dense(8, 16),
                    'bn': {'scale': (16,), 'bias': (16,)}, 'fuse': dense(32, 16)}
  fuse = np.asarray(params['fuse']['kernel'])
  np.testing.assert_array_equal(fuse[16:], np.eye(16))
  assert np.abs(fuse[:16]).max() > 0  # the y half is random: gradients reach W_z and the BN scale
  plain = AsymmetricPyramidBlock(norm='none').init(jax.random.PRNGKey(0), x)['params']
  assert set(plain) == {'theta', 'phi', 'g', 'out'}
  np.testing.assert_array_equal(plain['out']['kernel'], 0.0)


@pytest.mark.parametrize('rank,kwargs', [('1d', {'norm': 'none'}), ('2d', {'fusion': 'concat'}),
                                         ('3d', {'norm': 'affine', 'fusion': 'concat', 'weight_init': 'he'})])
def test_identity_at_init_and_gradient_reaches_the_gate(rank, kwargs):
  block = AsymmetricPyramidBlock(bins=(1, 2), **kwargs)
  x = jnp.asarray(random_input(SHAPES[rank], seed_of('apnb-id', rank)))
  variables = block.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(block.apply(variables, x), x, rtol=0, atol=1e-6 if 'fusion' in kwargs else 0)
  flags = gradient_flags(block, variables, x, 7)
  assert all(finite for finite, _ in flags.values())
  gate = 'bn/scale' if kwargs.get('norm', 'batch') == 'batch' else 'out/kernel'
  assert flags[gate][1]


def test_every_parameter_gets_a_finite_gradient():
  block = AsymmetricPyramidBlock(bins=(1, 2), fusion='concat')
  x = jnp.asarray(random_input(SHAPES['3d'], 61))
  variables = random_variables(block, x, 62)
  flags = gradient_flags(block, variables, x, 63)
  assert flags and all(finite and nonzero for finite, nonzero in flags.values()), flags


def test_jit_matches_eager():
  block = AsymmetricPyramidBlock()
  x = random_input(SHAPES['3d'], 71)
  variables = random_variables(block, x, 72)
  np.testing.assert_allclose(jax.jit(block.apply)(variables, x), block.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_same_parameters_apply_to_other_sizes():
  block = AsymmetricPyramidBlock()
  variables = random_variables(block, random_input((2, 4, 8, 8, 8), 81), 82)
  x = random_input((1, 2, 5, 9, 8), 83)
  assert branch_error(block.apply(variables, x), x, reference(x, variables)[0]) <= REL_TOL


def test_bfloat16_compute():
  block = AsymmetricPyramidBlock(dtype=jnp.bfloat16)
  x = random_input(SHAPES['2d'], 91)
  variables = random_variables(block, x, 92)
  z, state = block.apply(variables, x, mutable=['intermediates'])
  assert z.dtype == jnp.bfloat16 and state['intermediates']['attention'][0].dtype == jnp.float32
  assert branch_error(np.asarray(z, np.float32), x, reference(x, variables)[0]) < 5e-2


BAD_ARGUMENTS = [
    ('bins-empty', {'bins': ()}, (1, 4, 4, 8), r'bins must be a non-empty sequence of positive integers'),
    ('bins-zero', {'bins': (1, 0)}, (1, 4, 4, 8), r'bins must be'),
    ('temporal_bins-zero', {'temporal_bins': 0}, (1, 2, 4, 4, 8), r'temporal_bins must be a positive integer'),
    ('temporal_bins-2d', {'temporal_bins': 2}, (1, 4, 4, 8), r'temporal_bins=2 applies to 3D input'),
    ('fusion', {'fusion': 'product'}, (1, 4, 4, 8), r"fusion must be one of \('sum', 'concat'\)"),
    ('norm', {'norm': 'layer'}, (1, 4, 4, 8), r'norm must be one of'),
    ('inter_channels', {'inter_channels': -1}, (1, 4, 4, 8), r'inter_channels must be a positive integer'),
    ('rank', {}, (4, 8), r'AsymmetricPyramidBlock expects channels-last input of rank 3, 4, 5'),
]


@pytest.mark.parametrize('name,kwargs,shape,message', BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error(name, kwargs, shape, message):
  with pytest.raises(ValueError, match=message):
    AsymmetricPyramidBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))
