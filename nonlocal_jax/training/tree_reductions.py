"""Reductions over every leaf of a pytree (all finite? the L2 norm), computed in a few kernels, not one per leaf.

The train step checks its new parameters, BatchNorm statistics and optimiser state for NaN/Inf and logs the
gradients' norm, every step: over R50's ~160 parameter tensors, one reduction per leaf made ~500 small kernels of
the ~2,000 in a step compiled for a GPU, where each costs a few microseconds however small it is. On a GPU the
leaves are therefore ravelled and concatenated, a group at a time, into one reduction each: XLA:GPU fuses a
concatenation into the reduction that reads it, so nothing is written out, as long as the fused kernel's operands
stay within its limit. XLA:TPU and XLA:CPU write the concatenation out instead (10 % and 3 % more bytes a step),
so there each leaf keeps its own reduction. ``python -m bench.tree_reductions`` measures both formulations
(bench/results/tree_reductions.md).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp

from nonlocal_jax.layers import attention_auto

# Leaves concatenated into one reduction, by the backend compiled for (``attention_auto.target_backend``); 1 on
# any other. XLA:GPU splits a fused kernel of more than about 90 operands and then writes part of the concatenation
# out; 24 stays well within that (an H200 compile while this was written: 16.05 GB a step at 24, 16.11 at 48, 16.25 for all ~160 leaves at
# once, against 16.44 with one reduction per leaf).
LEAVES_PER_REDUCTION = {'gpu': 24}


def leaves_per_reduction() -> int:
  """How many leaves one reduction reads on the backend programs are compiled for."""
  return LEAVES_PER_REDUCTION.get(attention_auto.target_backend(), 1)


def _groups(leaves: Sequence[jax.Array]) -> Iterator[jax.Array]:
  """The leaves ravelled and concatenated, at most ``leaves_per_reduction()`` to a vector, each of one dtype (a
  group of one is the leaf as it is)."""
  size = leaves_per_reduction()
  by_dtype: dict = {}
  for x in leaves:
    by_dtype.setdefault(jnp.dtype(x.dtype), []).append(x)
  for same in by_dtype.values():
    for start in range(0, len(same), size):
      group = same[start:start + size]
      yield group[0] if len(group) == 1 else jnp.concatenate([jnp.ravel(x) for x in group])


def all_finite(tree: Any) -> jax.Array:
  """A boolean scalar: every floating-point value in ``tree`` is finite (integer leaves are ignored)."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  flags = [jnp.all(jnp.isfinite(group)) for group in _groups(leaves)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm of all leaves together, in float32 (logged to catch exploding gradients early)."""
  squares = [jnp.sum(jnp.square(group.astype(jnp.float32))) for group in _groups(jax.tree.leaves(tree))]
  return jnp.sqrt(sum(squares)) if squares else jnp.zeros((), jnp.float32)
