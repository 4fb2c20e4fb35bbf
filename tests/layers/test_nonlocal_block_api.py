"""Tests of ``NonLocalBlock``'s interface: the attention weights it sows, its argument errors and its
initialisation statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import NonLocalBlock
from tests.layers import reference
from tests.layers.nonlocal_helpers import (GEOMETRIES, PAIRWISE, REL_TOL, SOFTMAX, random_input, random_variables,
                                           reference_kwargs, relative_error, seed_of)


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
    ('affinity-budget', {'max_affinity_bytes': 0}, VIDEO, r'max_affinity_bytes must be a positive integer'),
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
