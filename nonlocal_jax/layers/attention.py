"""The pairwise part of the non-local operation, eq. (1) of the paper, on grouped position sets.

Every function here takes the embeddings of one or more independent position sets ("groups", folded into the
leading axis) and returns y_i = 1/C(x) * sum_j f(x_i, x_j) g(x_j) for every query i:

    q: (G, Nq, Dq)   θ(x_i), or x_i itself for the Gaussian
    k: (G, Nk, Dq)   φ(x_j), or x_j itself for the Gaussian
    v: (G, Nk, Dv)   g(x_j)

The implementations compute the same function and differ only in what they keep in memory:

- ``naive``: materialises the (G, Nq, Nk) affinity; autodiff keeps it (and its softmax) for the backward pass.
- ``lean`` (softmax functions only): materialises it once too, but keeps only the probabilities, in the compute
  dtype, for a written-out backward pass that never reads the logits again; FlashAttention's identity
  Σ_j p_ij ∂p_ij = ∂y_i · y_i turns the softmax's backward reduction over the affinity into one over y. In bf16
  it keeps a third of the bytes that 'naive' and 'fused' keep between the passes (they keep float32 and bf16
  copies of the probabilities), and XLA's fusions around the affinity move about half as many bytes
  (``python -m bench.gpu_compile``).
- ``chunked``: query block by query block, with a custom VJP that keeps only q, k, v between the passes and
  recomputes each block's affinity in the backward pass (as FlashAttention does): no (Nq, Nk) array is ever
  alive, forward or backward; the memory beyond the inputs and outputs is O(block·Nk).
- ``reassociated`` (dot product only): θ (φᵀ g) / N, cost O(N·C'²) and memory O(C'²) instead of O(N²).
- ``fused``: ``jax.nn.dot_product_attention`` (softmax functions only), XLA's attention.
- ``cudnn``: the same call with ``implementation='cudnn'``: cuDNN's fused (flash) attention on CUDA GPUs, in
  bfloat16/float16 with a head size up to 256; where the backend refuses it, the block falls back (one log line).

``resolve_implementation`` turns 'auto' into one of them: from the device's measured table where the package has
one (``attention_auto``), else by size.

The softmax always runs in float32, whatever the compute dtype.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp

from nonlocal_jax.layers import attention_auto
from nonlocal_jax.layers import pairwise as pairwise_lib

IMPLEMENTATIONS = ('auto', 'naive', 'lean', 'chunked', 'reassociated', 'fused', 'cudnn')
# The implementations that need a softmax pairwise function.
SOFTMAX_ONLY = ('lean', 'fused', 'cudnn')
_logger = logging.getLogger(__name__)
_logged = set()


def _naive(pairwise, q, k, v, logit_scale, concat_kernel):
  weights = pairwise_lib.pairwise_weights(pairwise, q, k, logit_scale=logit_scale, concat_kernel=concat_kernel)
  return jnp.einsum('gqk,gkc->gqc', weights.astype(v.dtype), v)


def _reassociated(q, k, v):
  # (θ φᵀ) g / N == θ (φᵀ g) / N: the N×N product is never formed.
  kv = jnp.einsum('gkc,gkd->gcd', k, v, preferred_element_type=pairwise_lib.accumulation_dtype(k)) / k.shape[1]
  return jnp.einsum('gqc,gcd->gqd', q, kv.astype(q.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def _lean(pairwise, q, k, v, logit_scale):
  return _lean_fwd(pairwise, q, k, v, logit_scale)[0]


def _lean_fwd(pairwise, q, k, v, logit_scale):
  # The barrier keeps XLA from recomputing p in the backward pass from the float32 logits, which would keep
  # those (twice p's bytes in bf16) alive between the passes instead.
  p = jax.lax.optimization_barrier(
      pairwise_lib.pairwise_weights(pairwise, q, k, logit_scale=logit_scale).astype(v.dtype))
  y = jnp.einsum('gqk,gkc->gqc', p, v, preferred_element_type=pairwise_lib.accumulation_dtype(v))
  # y is kept unrounded: the backward pass's dy·y stands for a sum over the affinity, and a bf16 y's rounding,
  # amplified where dp - dy·y cancels, would double the bf16 gradients' error (test_attention).
  return y.astype(v.dtype), (q, k, v, p, y)


def _lean_bwd(pairwise, logit_scale, residuals, dy):
  del pairwise  # Both softmax functions are softmax(s · q·kᵀ); they differ in what q and k are.
  q, k, v, p, y = residuals
  acc = pairwise_lib.accumulation_dtype(q)
  dp = jnp.einsum('gqc,gkc->gqk', dy, v, preferred_element_type=acc)
  # The softmax's backward needs Σ_j p_ij dp_ij per query, which is dy_i · y_i: a sum over C' channels, not Nk keys.
  row = jnp.sum(dy.astype(acc) * y, axis=-1, keepdims=True)
  ds = (p.astype(acc) * (dp - row) * logit_scale).astype(q.dtype)  # ∂ of the logits q·kᵀ
  dq = jnp.einsum('gqk,gkc->gqc', ds, k, preferred_element_type=acc).astype(q.dtype)
  dk = jnp.einsum('gqk,gqc->gkc', ds, q, preferred_element_type=acc).astype(k.dtype)
  dv = jnp.einsum('gqk,gqc->gkc', p, dy, preferred_element_type=acc).astype(v.dtype)
  return dq, dk, dv


_lean.defvjp(_lean_fwd, _lean_bwd)


def _fused(q, k, v, logit_scale, backend=None):
  # jax.nn.dot_product_attention wants one head size for q, k and v; zero padding is exact for both the
  # logits (q·k) and the output (the padded value channels are sliced off).
  dq, dv = q.shape[-1], v.shape[-1]
  width = max(dq, dv)
  pad = lambda t, d: t if d == width else jnp.pad(t, ((0, 0), (0, 0), (0, width - d)))
  out = jax.nn.dot_product_attention(pad(q, dq)[:, :, None], pad(k, dq)[:, :, None], pad(v, dv)[:, :, None],
                                     scale=logit_scale, implementation=backend)
  return out[:, :, 0, :dv]


def _log_once(message: str) -> None:
  # A block is traced again for every program (train step, eval step, ...): one line per distinct fallback.
  if message not in _logged:
    _logged.add(message)
    _logger.warning('%s', message)


def _for_each_query_block(n_query: int, block: int, body, carry):
  """Runs ``body(start, size, carry)`` over consecutive query blocks; the remainder block has a static size."""
  n_full = n_query // block
  if n_full > 1:
    carry = jax.lax.fori_loop(0, n_full, lambda i, c: body(i * block, block, c), carry)
  elif n_full == 1:
    carry = body(0, block, carry)
  if n_query % block:
    carry = body(n_full * block, n_query % block, carry)
  return carry


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5, 6))
def _chunked(pairwise, q, k, v, w, logit_scale, chunk_size):
  return _chunked_forward(pairwise, q, k, v, w, logit_scale, chunk_size)


def _chunked_forward(pairwise, q, k, v, w, logit_scale, chunk_size):
  # Each query block sees every key, so its softmax is complete and exact; only a (block, Nk) affinity
  # is alive at any time, written into the output in place.
  def body(start, size, y):
    q_block = jax.lax.dynamic_slice_in_dim(q, start, size, axis=1)
    y_block = _naive(pairwise, q_block, k, v, logit_scale, w)
    return jax.lax.dynamic_update_slice_in_dim(y, y_block, start, axis=1)

  y = jnp.zeros(q.shape[:2] + v.shape[2:], v.dtype)
  return _for_each_query_block(q.shape[1], chunk_size, body, y)


def _chunked_fwd(pairwise, q, k, v, w, logit_scale, chunk_size):
  # Residuals are the inputs only: the backward pass recomputes each block's affinity (as FlashAttention
  # does), so neither pass ever holds an (Nq, Nk) array.
  return _chunked_forward(pairwise, q, k, v, w, logit_scale, chunk_size), (q, k, v, w)


def _chunked_bwd(pairwise, logit_scale, chunk_size, residuals, dy):
  q, k, v, w = residuals

  def body(start, size, carry):
    dq, dk, dv, dw = carry
    q_block = jax.lax.dynamic_slice_in_dim(q, start, size, axis=1)
    dy_block = jax.lax.dynamic_slice_in_dim(dy, start, size, axis=1)
    _, vjp = jax.vjp(lambda qb, kk, vv, ww: _naive(pairwise, qb, kk, vv, logit_scale, ww), q_block, k, v, w)
    dq_block, dk_block, dv_block, dw_block = vjp(dy_block)
    dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_block.astype(dq.dtype), start, axis=1)
    return (dq, dk + dk_block.astype(jnp.float32), dv + dv_block.astype(jnp.float32),
            dw + dw_block.astype(jnp.float32))

  zeros = lambda t: jnp.zeros(t.shape, jnp.float32)
  carry = (jnp.zeros_like(q), zeros(k), zeros(v), zeros(w))
  dq, dk, dv, dw = _for_each_query_block(q.shape[1], chunk_size, body, carry)
  return dq, dk.astype(k.dtype), dv.astype(v.dtype), dw.astype(w.dtype)


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def check_implementation(implementation: str, pairwise: str) -> None:
  """Raises a ValueError unless ``implementation`` is known and computes ``pairwise`` exactly."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.')
  function = pairwise_lib.get(pairwise)
  if implementation == 'reassociated' and not function.linear:
    linear = tuple(name for name, f in pairwise_lib.PAIRWISE.items() if f.linear)
    raise ValueError(f"implementation='reassociated' only applies to the pairwise functions {linear} (the others "
                     f"are not linear in φ); got pairwise={pairwise!r}.")
  if implementation in SOFTMAX_ONLY and not function.softmax:
    softmax = tuple(name for name, f in pairwise_lib.PAIRWISE.items() if f.softmax)
    raise ValueError(f"implementation={implementation!r} supports the softmax pairwise functions {softmax}; got "
                     f"pairwise={pairwise!r}.")


def computes(implementation: str, pairwise: str) -> bool:
  """Whether ``implementation`` (not 'auto') computes ``pairwise`` exactly (``check_implementation`` passes)."""
  try:
    check_implementation(implementation, pairwise)
    return True
  except ValueError:
    return False


def resolve_implementation(implementation: str, pairwise: str, n_groups: int, n_query: int, n_key: int,
                           inter_dim: int, max_affinity_bytes: Optional[int], *, dtype=None, query_dim=None,
                           table=None) -> str:
  """Returns the concrete implementation that ``implementation`` stands for at this size, dtype and device.

  'auto' takes the fastest path of the device's measured table (``attention_auto``; ``table``: that table, None
  for the committed one of the default device, {} for none) that computes ``pairwise``, that the backend accepts,
  and that holds the whole affinity only if it fits ``max_affinity_bytes`` (None: the device's budget,
  ``attention_auto.affinity_budget``). Without a table (the CPU) it
  reassociates the dot product when that is cheaper in multiply-adds (N > 2·C'-ish), and computes the other
  functions query-block by query-block when the full float32 affinity would exceed ``max_affinity_bytes``.
  Explicit choices are validated against the pairwise function; 'cudnn' where the backend refuses it (not a CUDA
  GPU, float32, a head wider than 256) becomes what 'auto' picks without it, with one log line saying why.
  ``dtype`` is the compute dtype (None: float32), ``query_dim`` the size of q and k (None: ``inter_dim``).
  """
  check_implementation(implementation, pairwise)
  head_dim = max(query_dim or inter_dim, inter_dim)
  refusal = None
  if implementation == 'cudnn':
    refusal = attention_auto.cudnn_refusal(dtype, head_dim)
    if refusal is None:
      return implementation
  elif implementation != 'auto':
    return implementation
  table = attention_auto.current_table() if table is None else table
  if max_affinity_bytes is None:
    max_affinity_bytes = attention_auto.affinity_budget()
  ranked = attention_auto.ranking(table, pairwise, dtype, n_groups, n_query, n_key, inter_dim) or ()
  fits = 4 * n_groups * n_query * n_key <= max_affinity_bytes
  usable = [i for i in ranked if i in IMPLEMENTATIONS[1:] and computes(i, pairwise)
            and (fits or i not in attention_auto.MATERIALISING)
            and not (i == 'cudnn' and attention_auto.cudnn_refusal(dtype, head_dim))]
  choice = usable[0] if usable else _by_size(pairwise, n_groups, n_query, n_key, inter_dim, max_affinity_bytes)
  if refusal:
    _log_once(f"implementation='cudnn' cannot run here: {refusal}; the non-local block uses {choice!r} instead.")
  return choice


def _by_size(pairwise, n_groups, n_query, n_key, inter_dim, max_affinity_bytes) -> str:
  """'auto' without a measured table: the cheaper product for the dot product, chunks above the budget."""
  if pairwise_lib.get(pairwise).linear:
    # naive: Nq·Nk·(Dq + Dv) multiply-adds; reassociated: (Nq + Nk)·Dq·Dv.
    naive_cost = n_query * n_key * 2 * inter_dim
    reassoc_cost = (n_query + n_key) * inter_dim * inter_dim
    return 'reassociated' if reassoc_cost < naive_cost else 'naive'
  affinity_bytes = 4 * n_groups * n_query * n_key
  return 'chunked' if affinity_bytes > max_affinity_bytes else 'naive'


def nonlocal_attention(pairwise: str, q, k, v, *, implementation: str = 'naive', logit_scale: float = 1.0,
                       concat_kernel=None, chunk_size: int = 256):
  """y = (1/C(x)) Σ_j f(q_i, k_j) v_j for grouped positions; see the module docstring for the shapes.

  Args:
    pairwise: a key of ``nonlocal_jax.layers.pairwise.PAIRWISE``.
    q, k, v: (G, Nq, Dq), (G, Nk, Dq), (G, Nk, Dv).
    implementation: a concrete implementation (not 'auto'; see ``resolve_implementation``); 'cudnn' that
      the backend refuses while tracing is computed by 'chunked' (one log line).
    logit_scale: multiplies q·k before the softmax (softmax functions only).
    concat_kernel: (2·Dq, 1) weights w_f of the concatenation function.
    chunk_size: queries per block for the chunked implementation.
  Returns:
    (G, Nq, Dv) in the dtype of ``v``.
  """
  function = pairwise_lib.get(pairwise)
  if function.concat_projection and concat_kernel is None:
    raise ValueError(f"pairwise={pairwise!r} needs concat_kernel of shape (2*C', 1).")
  if implementation in ('reassociated',) + SOFTMAX_ONLY:
    check_implementation(implementation, pairwise)
  if implementation == 'naive':
    return _naive(pairwise, q, k, v, logit_scale, concat_kernel)
  if implementation == 'lean':
    return _lean(pairwise, q, k, v, float(logit_scale))
  if implementation == 'chunked':
    # A placeholder kernel keeps one custom-VJP signature for every pairwise function; it is not read.
    w = concat_kernel if concat_kernel is not None else jnp.zeros((2 * q.shape[-1], 1), jnp.float32)
    return _chunked(pairwise, q, k, v, w, float(logit_scale), max(1, int(chunk_size)))
  if implementation == 'reassociated':
    return _reassociated(q, k, v)
  if implementation == 'fused':
    return _fused(q, k, v, logit_scale).astype(v.dtype)
  if implementation == 'cudnn':
    try:
      return _fused(q, k, v, logit_scale, 'cudnn').astype(v.dtype)
    except (RuntimeError, ValueError, NotImplementedError) as e:  # Refused while tracing: compute it exactly.
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      _log_once(f'cuDNN refused the non-local attention of q {q.shape} {q.dtype} ({reason}); computing it with '
                "'chunked' instead.")
      return nonlocal_attention(pairwise, q, k, v, implementation='chunked', logit_scale=logit_scale,
                                concat_kernel=concat_kernel, chunk_size=chunk_size)
  raise ValueError(f"implementation must be one of {IMPLEMENTATIONS[1:]} here, got {implementation!r} "
                   "(resolve 'auto' with resolve_implementation first).")
