"""The whole-tree reductions against NumPy: a NaN or Inf in any leaf of any group, and the float64 norm, with one
leaf per reduction (CPU and TPU) and with the GPU's groups (run here by giving the CPU the GPU's group size)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.training import tree_reductions

_GPU_GROUP = tree_reductions.LEAVES_PER_REDUCTION['gpu']
_DTYPES = (np.float32, jnp.bfloat16, np.int32)
_SHAPES = ((3,), (2, 4), (1, 1, 5), (), (6, 2))
# Each dtype gets more leaves than one group takes, so that groups and dtypes both split.
_LEAVES = len(_DTYPES) * (_GPU_GROUP + 2)


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {f'leaf{i:03d}': np.asarray(rng.normal(size=_SHAPES[i % 5]) * 10, _DTYPES[i % 3]) for i in range(_LEAVES)}


@pytest.fixture(params=[1, _GPU_GROUP], ids=['per-leaf', 'gpu-groups'])
def reductions(request, monkeypatch):
  """(all_finite, global_norm), jitted, with ``request.param`` leaves per reduction on this backend."""
  monkeypatch.setitem(tree_reductions.LEAVES_PER_REDUCTION, 'cpu', request.param)
  assert tree_reductions.leaves_per_reduction() == request.param
  # New functions, so new traces: JAX keeps a function's trace across jit wrappers, and the group size is read
  # when it traces.
  return (jax.jit(lambda tree: tree_reductions.all_finite(tree)),  # pylint: disable=unnecessary-lambda
          jax.jit(lambda tree: tree_reductions.global_norm(tree)))  # pylint: disable=unnecessary-lambda


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_value_in_any_float_leaf(reductions, bad):
  all_finite, _ = reductions
  tree = _tree()
  assert bool(all_finite(tree))
  for name in sorted(tree):
    if tree[name].dtype == np.int32:
      continue
    value = np.array(tree[name], copy=True)
    value.reshape(-1)[-1] = bad
    assert not bool(all_finite({**tree, name: value})), name


def test_all_finite_ignores_integers_and_empty_trees(reductions):
  all_finite, _ = reductions
  assert bool(all_finite({'step': np.int32(7), 'count': np.arange(3)}))
  assert bool(all_finite({}))


def test_global_norm_matches_float64(reductions):
  _, global_norm = reductions
  tree = _tree(1)
  expected = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in tree.values()))
  np.testing.assert_allclose(float(global_norm(tree)), expected, rtol=1e-6)
  assert float(global_norm({})) == 0.0
