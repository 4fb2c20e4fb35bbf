"""Helpers shared by the tests of the non-local block and its family (GC, APNB, CC, CGNL, A²): random data,
parameters, errors, and gradients against a float64 reference's central differences."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

REL_TOL = 1e-4  # the bound against the float64 references


def seed_of(*parts) -> int:
  """A reproducible seed that differs between parametrised cases."""
  return zlib.crc32(repr(parts).encode())


def random_input(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def randomize(variables, seed, scalar_scale=0.5):
  """Every variable replaced by a random value of its shape, so no term is trivially 0 or 1.

  Kernels get std 1/sqrt(fan_in) (unit-scale embeddings: a softmax neither flat nor one-hot); scales are away
  from 0 with both signs; scalars (CC's γ) are ±``scalar_scale``; running variances are in [0.5, 2].
  """
  rng = np.random.default_rng(seed)

  def leaf(path, value):
    names = [p.key for p in path]
    shape = value.shape
    if names[0] == 'batch_stats':
      sample = rng.normal(0.0, 0.3, shape) if names[-1] == 'mean' else rng.uniform(0.5, 2.0, shape)
    elif names[-1] == 'scale':
      sample = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    elif names[-1] == 'kernel':
      sample = rng.normal(0.0, shape[0] ** -0.5, shape)
    elif not shape:
      sample = scalar_scale * rng.choice([-1.0, 1.0])
    else:
      sample = rng.normal(0.0, 0.3, shape)
    return jnp.asarray(sample, dtype=value.dtype)

  return jax.tree_util.tree_map_with_path(leaf, variables)


def as64(tree):
  """A parameter tree as float64 NumPy arrays."""
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def branch_error(z, x, z_ref):
  """max|Δ(z - x)| / max|z_ref - x|: the error of what the block adds, relative to what it adds."""
  got = np.asarray(z, np.float64) - np.asarray(x, np.float64)
  want = np.asarray(z_ref, np.float64) - np.asarray(x, np.float64)
  scale = np.abs(want).max()
  assert scale > 1e-3 * np.abs(np.asarray(x)).max(), 'the test data leave the block almost nothing to add'
  return np.abs(got - want).max() / scale


def relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()


def softmax64(logits, axis=-1):
  """A float64 softmax."""
  e = np.exp(logits - logits.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def batch_norm64(v, params, stats, eps):
  """Inference-mode BatchNorm in float64 (running statistics)."""
  return (v - stats['mean']) / np.sqrt(stats['var'] + eps) * params['scale'] + params['bias']


def leaves_finite_and_nonzero(grads):
  """{path: (all finite, any non-zero)} of a gradient tree."""
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  return {'/'.join(p.key for p in path): (bool(np.isfinite(np.asarray(g)).all()), bool(np.any(np.asarray(g) != 0)))
          for path, g in flat}


def gradient_flags(block, variables, x, target_seed):
  """``leaves_finite_and_nonzero`` of the parameters' gradient of Σ block(x)·r, with r random (``target_seed``)."""
  target = jnp.asarray(random_input(np.shape(x), target_seed))
  grads = jax.grad(lambda p: jnp.sum(block.apply({**variables, 'params': p}, x) * target))(variables['params'])
  return leaves_finite_and_nonzero(grads)


def assert_bfloat16_compute(block32, x, variables):
  """``block32`` cloned with dtype bfloat16 keeps float32 parameters and adds to x what the float32 block adds, up
  to bf16 rounding (8 bits of mantissa: 5e-2 relative)."""
  block16 = block32.clone(dtype=jnp.bfloat16)
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(
      jax.eval_shape(block16.init, jax.random.PRNGKey(0), x)))
  z16, z32 = block16.apply(variables, x), block32.apply(variables, x)
  assert z16.dtype == jnp.bfloat16
  assert relative_error(z16.astype(jnp.float32) - x, z32 - x) <= 5e-2


def directional_derivatives(grads, variables, x, reference_loss, rng, eps=1e-5) -> tuple[float, float]:
  """(jax.grad's, central differences') derivative of a loss along a random direction of (params, x).

  ``grads`` is jax.grad's (w.r.t. the variables, whose 'params' it holds, and w.r.t. ``x``); ``reference_loss(params,
  x)`` computes the same loss in float64 at the given params and input. The direction is drawn from ``rng``: the
  params' leaves in tree order, then x's.
  """
  direction = jax.tree_util.tree_map(lambda v: rng.normal(size=v.shape), variables['params'])
  dx = rng.normal(size=np.shape(x))
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in
                 zip(jax.tree_util.tree_leaves(grads[0]['params']), jax.tree_util.tree_leaves(direction)))
  analytic += float(np.sum(np.asarray(grads[1], np.float64) * dx))

  def at(step):
    params = jax.tree_util.tree_map(lambda p, d: np.asarray(p, np.float64) + step * d, variables['params'],
                                    direction)
    return reference_loss(params, np.asarray(x, np.float64) + step * dx)
  return analytic, (at(eps) - at(-eps)) / (2 * eps)
