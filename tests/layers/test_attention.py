"""Tests of ``nonlocal_jax.layers.attention``: the pairwise part of eq. (1) on grouped position sets.

Each implementation ('naive', 'lean', 'chunked', 'reassociated', 'fused') is checked against the float64 NumPy
reference in ``tests/layers/reference.py`` on raw (q, k, v) with Nq ≠ Nk and Dq ≠ Dv, their gradients against
each other, the choice that 'auto' makes, the errors, and that the frugal paths really hold no N×N array in the
forward or the backward pass. The block-level versions of these checks are in ``test_nonlocal_block_paths.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import attention
from nonlocal_jax.layers.pairwise import PAIRWISE as TABLE
from nonlocal_jax.layers.pairwise import PAIRWISE_FUNCTIONS, pairwise_weights
from tests.layers import reference

PAIRWISE = PAIRWISE_FUNCTIONS
CONCRETE = ('naive', 'lean', 'chunked', 'reassociated', 'fused')
LOGIT_SCALE = 0.7


def applicable(pairwise, implementation):
  """Whether ``implementation`` computes ``pairwise`` (the others raise, see the error tests)."""
  if implementation == 'reassociated':
    return pairwise == 'dot_product'
  if implementation in ('lean', 'fused'):
    return TABLE[pairwise].softmax
  return True


CASES = [(p, i) for p in PAIRWISE for i in CONCRETE if applicable(p, i)]


def random_qkv(groups, n_query, n_key, d_qk, d_v, seed):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(groups, n_query, d_qk)).astype(np.float32)
  k = rng.normal(size=(groups, n_key, d_qk)).astype(np.float32)
  v = rng.normal(size=(groups, n_key, d_v)).astype(np.float32)
  w_f = rng.normal(size=(2 * d_qk, 1)).astype(np.float32)
  return q, k, v, w_f


def reference_attention(pairwise, q, k, v, w_f, logit_scale):
  """y per group from the reference's pairwise weights; the logit scale enters as a scaled q (softmax only)."""
  out = []
  for g in range(q.shape[0]):
    qg = np.asarray(q[g], np.float64)
    if TABLE[pairwise].softmax:
      # exp(s·qᵀk) is the reference's unscaled softmax of (s·q)ᵀk.
      weights = reference.pairwise_weights('gaussian', logit_scale * qg, np.asarray(k[g], np.float64),
                                           inter_channels=q.shape[-1], scale=False)
    else:
      weights = reference.pairwise_weights(pairwise, qg, np.asarray(k[g], np.float64), inter_channels=q.shape[-1],
                                           scale=False, concat_kernel=np.asarray(w_f, np.float64))
    out.append(weights @ np.asarray(v[g], np.float64))
  return np.stack(out)


def run(pairwise, implementation, q, k, v, w_f, chunk_size=3):
  return attention.nonlocal_attention(pairwise, q, k, v, implementation=implementation, logit_scale=LOGIT_SCALE,
                                      concat_kernel=w_f if pairwise == 'concatenation' else None,
                                      chunk_size=chunk_size)


def relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()


# (groups, Nq, Nk, Dq, Dv): Dq > Dv and Dq < Dv both pad in the fused path; Nq = 7 is not a multiple of 3.
SHAPES = [(3, 7, 5, 4, 6), (2, 7, 11, 6, 3), (1, 1, 1, 2, 2)]


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('pairwise,implementation', CASES, ids='-'.join)
def test_matches_reference(pairwise, implementation, shape):
  q, k, v, w_f = random_qkv(*shape, seed=sum(shape))
  y = run(pairwise, implementation, q, k, v, w_f)
  assert y.shape == shape[:2] + (shape[4],) and y.dtype == jnp.float32
  assert relative_error(y, reference_attention(pairwise, q, k, v, w_f, LOGIT_SCALE)) <= 1e-5


@pytest.mark.parametrize('chunk_size', [1, 2, 7, 8, 100])
@pytest.mark.parametrize('pairwise', PAIRWISE)
def test_chunked_equals_naive_for_any_chunk_size(pairwise, chunk_size):
  q, k, v, w_f = random_qkv(2, 7, 5, 4, 3, seed=chunk_size)
  naive = run(pairwise, 'naive', q, k, v, w_f)
  np.testing.assert_allclose(run(pairwise, 'chunked', q, k, v, w_f, chunk_size), naive, rtol=1e-5, atol=1e-6)


@functools.lru_cache(maxsize=None)
def _grads(pairwise, implementation):
  """Gradients of Σ y·r w.r.t. q, k, v (and w_f for concatenation), jitted once per path."""
  q, k, v, w_f = random_qkv(2, 9, 6, 4, 5, seed=1)
  r = jnp.asarray(np.random.default_rng(2).normal(size=(2, 9, 5)), jnp.float32)
  argnums = (0, 1, 2, 3) if pairwise == 'concatenation' else (0, 1, 2)

  def loss(q, k, v, w_f):
    return jnp.sum(run(pairwise, implementation, q, k, v, w_f, chunk_size=4) * r)

  return jax.jit(jax.grad(loss, argnums=argnums))(q, k, v, w_f)


@pytest.mark.parametrize('pairwise,implementation', [c for c in CASES if c[1] != 'naive'], ids='-'.join)
def test_gradients_equal_naive(pairwise, implementation):
  for name, got, want in zip('qkvw', _grads(pairwise, implementation), _grads(pairwise, 'naive')):
    assert relative_error(got, want) <= 1e-5, name


def test_naive_gradient_matches_reference_finite_differences():
  """Guards the common baseline of the gradient comparisons: central differences of the float64 reference."""
  q, k, v, w_f = random_qkv(2, 9, 6, 4, 5, seed=1)
  r = np.random.default_rng(2).normal(size=(2, 9, 5))
  for pairwise in PAIRWISE:
    grads = _grads(pairwise, 'naive')
    rng = np.random.default_rng(3)
    directions = [rng.normal(size=a.shape) for a in (q, k, v, w_f)][:len(grads)]
    analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in zip(grads, directions))

    def loss(eps):
      moved = [np.asarray(a, np.float64) + eps * d for a, d in zip((q, k, v, w_f), directions + [0.0])]
      return float(np.sum(reference_attention(pairwise, *moved, LOGIT_SCALE) * r))

    numeric = (loss(1e-5) - loss(-1e-5)) / 2e-5
    assert abs(analytic - numeric) <= 1e-4 * abs(numeric), pairwise


def test_pairwise_weights():
  q, k, _, w_f = random_qkv(2, 4, 6, 3, 1, seed=4)
  for pairwise in PAIRWISE:
    weights = pairwise_weights(pairwise, q, k, logit_scale=LOGIT_SCALE, concat_kernel=w_f)
    assert weights.shape == (2, 4, 6) and weights.dtype == jnp.float32
    ones = np.ones((2, 6, 1), np.float32)
    # weights @ 1 is y for v = 1: the reference's Σ_j f / C(x).
    want = reference_attention(pairwise, q, k, ones, w_f, LOGIT_SCALE)[..., 0]
    np.testing.assert_allclose(np.asarray(weights).sum(-1), want, rtol=1e-5, atol=1e-6)
    if TABLE[pairwise].softmax:
      np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  # The logit scale belongs to the softmax functions only.
  for pairwise in ('dot_product', 'concatenation'):
    a = pairwise_weights(pairwise, q, k, logit_scale=1.0, concat_kernel=w_f)
    b = pairwise_weights(pairwise, q, k, logit_scale=0.25, concat_kernel=w_f)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('pairwise,implementation', CASES, ids='-'.join)
def test_bfloat16_inputs(pairwise, implementation):
  q, k, v, w_f = random_qkv(2, 7, 5, 4, 6, seed=5)
  y32 = run(pairwise, implementation, q, k, v, w_f)
  y16 = run(pairwise, implementation, *(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), w_f)
  assert y16.dtype == jnp.bfloat16
  assert relative_error(y16.astype(jnp.float32), y32) <= 5e-2


def _bf16_gradient_errors(pairwise, implementation):
  """Relative errors of the bf16 gradients of Σ y·r against the float32 ones of 'naive', per q, k, v."""
  q, k, v, _ = random_qkv(2, 40, 24, 8, 6, seed=8)
  r = np.random.default_rng(9).normal(size=(2, 40, 6)).astype(np.float32)

  def grads(implementation, dtype):
    def loss(q, k, v):
      return jnp.sum(run(pairwise, implementation, q, k, v, None).astype(jnp.float32) * r)
    return jax.grad(loss, argnums=(0, 1, 2))(*(jnp.asarray(a, dtype) for a in (q, k, v)))

  want = grads('naive', jnp.float32)
  return [relative_error(jnp.asarray(g, jnp.float32), w) for g, w in zip(grads(implementation, jnp.bfloat16), want)]


@pytest.mark.parametrize('pairwise', ['gaussian', 'embedded_gaussian'])
def test_lean_bfloat16_gradients_are_as_accurate_as_naive(pairwise):
  """'lean' keeps bf16 probabilities for its backward pass where autodiff of 'naive' keeps float32 ones: its bf16
  gradients may differ from naive's, but must not be further from the float32 gradients than bf16 rounding of
  the same size (twice naive's error)."""
  naive = _bf16_gradient_errors(pairwise, 'naive')
  lean = _bf16_gradient_errors(pairwise, 'lean')
  assert max(naive) < 5e-2  # the bf16 baseline itself is sane
  for name, got, baseline in zip('qkv', lean, naive):
    assert got <= 2 * baseline, (name, got, baseline)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_lean_keeps_only_compute_dtype_probabilities_between_the_passes(dtype):
  """What the backward pass holds (the residuals of jax.vjp): one (G, Nq, Nk) array, in the compute dtype; autodiff
  of 'naive' holds float32 ones."""
  groups, n_query, n_key = 2, 12, 10
  q, k, v, _ = (jnp.asarray(a, dtype) for a in random_qkv(groups, n_query, n_key, 4, 3, seed=10))

  def affinities(implementation):
    _, backward = jax.vjp(lambda q, k, v: run('embedded_gaussian', implementation, q, k, v, None), q, k, v)
    return [a.dtype for a in jax.tree_util.tree_leaves(backward) if a.size == groups * n_query * n_key]

  assert affinities('lean') == [dtype]
  assert jnp.float32 in affinities('naive')  # the probe sees autodiff's residuals


# --- 'auto' and the errors -----------------------------------------------------------------------------------


def test_resolve_explicit_choices_pass_through():
  for pairwise, implementation in CASES:
    assert attention.resolve_implementation(implementation, pairwise, 1, 10, 10, 4, 0) == implementation


@pytest.mark.parametrize('n', [4, 8, 9, 64])
def test_auto_reassociates_the_dot_product_when_cheaper(n):
  # naive: Nq·Nk·2C' multiply-adds; reassociated: (Nq + Nk)·C'². Equal at N = C' = 8.
  inter = 8
  cheaper = (n + n) * inter * inter < n * n * 2 * inter
  assert cheaper == (n > inter)
  chosen = attention.resolve_implementation('auto', 'dot_product', 1, n, n, inter, 2**40)
  assert chosen == ('reassociated' if cheaper else 'naive')


@pytest.mark.parametrize('pairwise', ['gaussian', 'embedded_gaussian', 'concatenation'])
def test_auto_chunks_when_the_affinity_exceeds_the_budget(pairwise):
  groups, n_query, n_key = 3, 10, 7
  affinity_bytes = 4 * groups * n_query * n_key  # float32
  resolve = functools.partial(attention.resolve_implementation, 'auto', pairwise, groups, n_query, n_key, 4)
  assert resolve(affinity_bytes) == 'naive'
  assert resolve(affinity_bytes - 1) == 'chunked'


@pytest.mark.parametrize('implementation,pairwise,message', [
    ('reassociated', 'gaussian', "implementation='reassociated'.*dot_product"),
    ('reassociated', 'embedded_gaussian', "implementation='reassociated'"),
    ('reassociated', 'concatenation', "implementation='reassociated'"),
    ('fused', 'dot_product', "implementation='fused'.*embedded_gaussian"),
    ('fused', 'concatenation', "implementation='fused'"),
    ('lean', 'dot_product', "implementation='lean'.*embedded_gaussian"),
    ('lean', 'concatenation', "implementation='lean'"),
    ('flash', 'gaussian', 'implementation must be one of'),
], ids=lambda c: str(c))
def test_resolve_rejects_what_does_not_apply(implementation, pairwise, message):
  with pytest.raises(ValueError, match=message):
    attention.resolve_implementation(implementation, pairwise, 1, 10, 10, 4, 2**20)


def test_nonlocal_attention_errors():
  q, k, v, w_f = random_qkv(1, 3, 3, 2, 2, seed=6)
  with pytest.raises(ValueError, match='pairwise must be one of'):
    attention.nonlocal_attention('cosine', q, k, v)
  with pytest.raises(ValueError, match='concat_kernel'):
    attention.nonlocal_attention('concatenation', q, k, v)
  with pytest.raises(ValueError, match="resolve 'auto'"):
    attention.nonlocal_attention('gaussian', q, k, v, implementation='auto')
  with pytest.raises(ValueError, match="implementation='reassociated'"):
    attention.nonlocal_attention('gaussian', q, k, v, implementation='reassociated')
  with pytest.raises(ValueError, match="implementation='fused'"):
    attention.nonlocal_attention('dot_product', q, k, v, implementation='fused')


# --- Memory: no N×N array on the frugal paths ---------------------------------------------------------------


def largest_array(fn, *args):
  """The element count of the largest value in the jaxpr of ``fn`` and all of its sub-jaxprs."""
  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      for var in list(eqn.invars) + list(eqn.outvars):
        if hasattr(getattr(var, 'aval', None), 'shape'):
          yield int(np.prod(var.aval.shape))
      for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(item, 'jaxpr', item)
          if hasattr(sub, 'eqns'):
            yield from walk(sub)
  return max(walk(jax.make_jaxpr(fn)(*args).jaxpr))


@pytest.mark.parametrize('pairwise,implementation', [('gaussian', 'chunked'), ('embedded_gaussian', 'chunked'),
                                                     ('dot_product', 'chunked'), ('concatenation', 'chunked'),
                                                     ('dot_product', 'reassociated')], ids='-'.join)
def test_frugal_paths_hold_no_n_by_n_array_forward_or_backward(pairwise, implementation):
  """Forward and backward: a stack of per-chunk affinities saved for the backward pass would count too."""
  n, chunk = 256, 32
  q, k, v, w_f = random_qkv(1, n, n, 4, 4, seed=7)

  def loss(q, k, v, w_f, implementation):
    return jnp.sum(run(pairwise, implementation, q, k, v, w_f, chunk_size=chunk) ** 2)

  grad = jax.grad(loss, argnums=(0, 1, 2, 3))
  assert largest_array(functools.partial(grad, implementation='naive'), q, k, v, w_f) >= n * n  # the probe works
  assert largest_array(functools.partial(grad, implementation=implementation), q, k, v, w_f) <= n * n // 4
