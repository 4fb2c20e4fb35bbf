"""What the tests of ``NonLocalBlock`` share: its pairwise functions, the input geometries, random variables and
the error of the block's branch against the float64 reference (``tests/layers/reference.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.layers.family_helpers import REL_TOL, random_input, randomize, relative_error, seed_of

__all__ = ['GEOMETRIES', 'PAIRWISE', 'REL_TOL', 'SOFTMAX', 'branch_error', 'random_input', 'random_variables',
           'reference_kwargs', 'relative_error', 'seed_of', 'max_abs', 'structurally_zero_biases']

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


def max_abs(tree):
  """The largest |value| in a tree."""
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
