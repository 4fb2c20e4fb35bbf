"""The pairwise functions f(x_i, x_j) of the non-local operation and what each needs and costs (docs/paper.md §2).

``PAIRWISE`` is the one table of them: the block, the attention implementations, the model summary, the
visualiser, the configs and the sweeps read it. Adding a function means adding an entry here (and its float64
reference in tests/layers/reference.py); nothing else lists them.

Every ``weights`` function takes the embeddings of grouped position sets, q (G, Nq, D) and k (G, Nk, D), and
returns the normalised weights f(x_i, x_j) / C(x) of eq. (1), (G, Nq, Nk), in float32 (float64 stays float64):

    gaussian            softmax_j(x_iᵀ x_j)                      no embeddings: q, k are x itself
    embedded_gaussian   softmax_j(s · θ(x_i)ᵀ φ(x_j))            s = C'^-0.5 with ``scale`` (official), else 1
    dot_product         θ(x_i)ᵀ φ(x_j) / N
    concatenation       ReLU(w_fᵀ [θ(x_i); φ(x_j)]) / N          w_f: (2·C', 1)

For the softmax functions a row is a distribution over j; for the others it is f / N (not a distribution).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp


def accumulation_dtype(t) -> jnp.dtype:
  """float32 for bf16/f16/f32 inputs (the softmax must not run in bf16); float64 stays float64."""
  return jnp.promote_types(t.dtype, jnp.float32)


def _logits(q, k):
  return jnp.einsum('gqc,gkc->gqk', q, k, preferred_element_type=accumulation_dtype(q))


def concat_terms(q, k, concat_kernel):
  """Splits w_fᵀ [θ_i; φ_j] into w_θᵀ θ_i + w_φᵀ φ_j, so no (Nq, Nk, 2C') array is ever formed."""
  d = q.shape[-1]
  acc = accumulation_dtype(q)
  w = concat_kernel.astype(acc)
  a = jnp.einsum('gqc,c->gq', q.astype(acc), w[:d, 0])
  b = jnp.einsum('gkc,c->gk', k.astype(acc), w[d:, 0])
  return a, b


def _softmax_weights(q, k, logit_scale, concat_kernel):
  del concat_kernel
  return jax.nn.softmax(_logits(q, k) * logit_scale, axis=-1)


def _dot_product_weights(q, k, logit_scale, concat_kernel):
  del logit_scale, concat_kernel
  return _logits(q, k) / k.shape[1]


def _concatenation_weights(q, k, logit_scale, concat_kernel):
  del logit_scale
  a, b = concat_terms(q, k, concat_kernel)
  return jax.nn.relu(a[:, :, None] + b[:, None, :]) / k.shape[1]


def _similarity_macs(n_query: int, n_key: int, width: int) -> int:
  return n_query * n_key * width


def _concatenation_macs(n_query: int, n_key: int, width: int) -> int:
  del width  # ReLU(a_i + b_j): one addition per pair; the projections a, b are O(N·C').
  return n_query * n_key


@dataclasses.dataclass(frozen=True)
class PairwiseFunction:
  """One pairwise function: how it is computed and what it needs.

  Attributes:
    name: its config value ('embedded_gaussian').
    label: its name in the paper's tables ('Gaussian, embed').
    softmax: C(x) = Σ_j f(x_i, x_j), i.e. a softmax over the keys (True), or C(x) = N (False).
    embedded: q and k are the 1×1 embeddings θ(x), φ(x) (True), or x itself (False: no θ, φ parameters).
    concat_projection: needs the (2·C', 1) projection w_f ('concat_project/kernel').
    scalable: ``NonLocalBlock.scale`` (the official USE_SCALE) multiplies its logits by C'^-0.5.
    linear: f is bilinear and C(x) = N, so θ (φᵀ g) / N computes eq. (1) exactly (the reassociated path).
    weights: (q, k, logit_scale, concat_kernel) -> (G, Nq, Nk) normalised weights.
    affinity_macs: (Nq, Nk, width of q and k) -> multiply-adds of the affinity of one position set.
  """
  name: str
  label: str
  softmax: bool
  embedded: bool
  concat_projection: bool
  scalable: bool
  linear: bool
  weights: Callable
  affinity_macs: Callable[[int, int, int], int]


PAIRWISE = {f.name: f for f in (
    PairwiseFunction('gaussian', 'Gaussian', softmax=True, embedded=False, concat_projection=False,
                     scalable=False, linear=False, weights=_softmax_weights, affinity_macs=_similarity_macs),
    PairwiseFunction('embedded_gaussian', 'Gaussian, embed', softmax=True, embedded=True, concat_projection=False,
                     scalable=True, linear=False, weights=_softmax_weights, affinity_macs=_similarity_macs),
    PairwiseFunction('dot_product', 'dot-product', softmax=False, embedded=True, concat_projection=False,
                     scalable=False, linear=True, weights=_dot_product_weights, affinity_macs=_similarity_macs),
    PairwiseFunction('concatenation', 'concatenation', softmax=False, embedded=True, concat_projection=True,
                     scalable=False, linear=False, weights=_concatenation_weights,
                     affinity_macs=_concatenation_macs),
)}
PAIRWISE_FUNCTIONS = tuple(PAIRWISE)


def get(name: str) -> PairwiseFunction:
  """The table entry of ``name``; an unknown name fails with the list of known ones."""
  if name not in PAIRWISE:
    raise ValueError(f'pairwise must be one of {PAIRWISE_FUNCTIONS}, got {name!r}.')
  return PAIRWISE[name]


def pairwise_weights(name: str, q, k, *, logit_scale: float = 1.0, concat_kernel: Optional[jax.Array] = None):
  """The normalised weights f(x_i, x_j) / C(x), shape (G, Nq, Nk), of pairwise function ``name``."""
  function = get(name)
  if function.concat_projection and concat_kernel is None:
    raise ValueError(f"pairwise={name!r} needs concat_kernel of shape (2*C', 1).")
  return function.weights(q, k, logit_scale, concat_kernel)
