"""An independent NumPy float64 reference of the non-local block, written from docs/paper.md §1–§2.

    y_i = (1 / C(x)) Σ_j f(x_i, x_j) g(x_j)        (eq. 1)
    z_i = BN(W_z y_i) + x_i                         (eq. 6, with the BatchNorm of §2)

Nothing here calls or mirrors the package: the sets of positions that attend among themselves are built as
explicit lists of index tuples (one list per group, keyed by a group label), max pooling is a loop over
windows, and f and C(x) follow the table of docs/paper.md §1 pair by pair within each group. The package instead
reshapes and transposes whole arrays, so a wrong axis there cannot be reproduced here by accident.

Parameters are taken in the Flax layout of the block (``theta/kernel`` of shape (C_in, C_out), ...), converted
to float64 by ``to_float64``.
"""

from __future__ import annotations

import numpy as np


def to_float64(tree):
  """A nested dict of arrays (Flax variables) as nested dicts of float64 NumPy arrays."""
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    return {k: to_float64(v) for k, v in tree.items()}
  return np.asarray(tree, dtype=np.float64)


def conv1x1(t, layer):
  """A 1×1(×1) convolution: a per-position matrix product with ``kernel`` (C_in, C_out) plus ``bias``."""
  out = t @ layer['kernel']
  if 'bias' in layer:
    out = out + layer['bias']
  return out


def max_pool(t, window):
  """Max pooling with window = stride and no padding (floor), one window at a time.

  Args:
    t: (B, *positions, D).
    window: one integer per position axis.
  """
  batch, spatial, depth = t.shape[0], t.shape[1:-1], t.shape[-1]
  out_shape = tuple(s // w for s, w in zip(spatial, window))
  out = np.empty((batch,) + out_shape + (depth,))
  for b in range(batch):
    for o in np.ndindex(*out_shape):
      best = np.full(depth, -np.inf)
      for offset in np.ndindex(*window):
        src = tuple(oi * w + di for oi, w, di in zip(o, window, offset))
        best = np.maximum(best, t[(b,) + src])
      out[(b,) + o] = best
  return out


def group_label(position, positions, temporal_groups):
  """The label of the position set that ``position`` (an index tuple without batch) belongs to.

  Two positions attend to each other iff they are in the same batch element and have equal labels:
  spacetime: one set; 'space': the frame t; 'time': the location (h, w); temporal groups of k frames: t // k.
  """
  if len(position) != 3:
    return ()
  if positions == 'space':
    return (position[0],)
  if positions == 'time':
    return tuple(position[1:])
  if temporal_groups is not None:
    return (position[0] // temporal_groups,)
  return ()


def position_groups(spatial, positions, temporal_groups):
  """{label: [index tuples in row-major order]} for a grid of the given non-channel shape."""
  groups = {}
  for p in np.ndindex(*spatial):
    groups.setdefault(group_label(p, positions, temporal_groups), []).append(p)
  return groups


def pairwise_weights(pairwise, q, k, *, inter_channels, scale, concat_kernel=None):
  """f(x_i, x_j) / C(x) for one group: q (Nq, Dq) and k (Nk, Dq) -> (Nq, Nk), as in docs/paper.md §1."""
  n_keys = k.shape[0]
  if pairwise in ('gaussian', 'embedded_gaussian'):
    logits = q @ k.T
    if pairwise == 'embedded_gaussian' and scale:
      logits = logits * inter_channels ** -0.5  # official USE_SCALE
    f = np.exp(logits - logits.max(axis=1, keepdims=True))
    return f / f.sum(axis=1, keepdims=True)  # C(x) = Σ_j f
  if pairwise == 'dot_product':
    return (q @ k.T) / n_keys  # C(x) = N
  if pairwise == 'concatenation':
    # The literal [θ_i, φ_j] of every pair, not the package's split of w_f.
    pairs = np.concatenate([np.broadcast_to(q[:, None, :], (q.shape[0], n_keys, q.shape[1])),
                            np.broadcast_to(k[None, :, :], (q.shape[0], n_keys, k.shape[1]))], axis=-1)
    return np.maximum(pairs @ concat_kernel[:, 0], 0.0) / n_keys
  raise ValueError(pairwise)


def nonlocal_block(x, params, batch_stats=None, *, pairwise, subsample=None, pool_position='before', scale=True,
                   positions=None, temporal_groups=None, norm='batch', train=False, eps=1e-5):
  """The block's output z and its parts, in float64.

  Args:
    x: (B, *positions, C) input.
    params, batch_stats: the block's Flax variables (any float dtype; converted here).
    train: BatchNorm with the batch statistics (biased variance over all non-channel axes) instead of the
      running ones.
  Returns:
    (z, parts) with parts = {'y': y of eq. (1) at every query position, 'weights': {(b, label): (Nq, Nk)},
    'branch': z - x, 'offset': the part of z - x that does not depend on y, 'batch_mean', 'batch_var'}.
  """
  x = np.asarray(x, dtype=np.float64)
  params = to_float64(params)
  batch_stats = to_float64(batch_stats) if batch_stats is not None else None
  window = tuple(subsample) if subsample is not None else None
  pool = (lambda t: max_pool(t, window)) if window else (lambda t: t)
  inter = params['g']['kernel'].shape[1]

  kv_input = pool(x) if pool_position == 'before' else x
  if pairwise == 'gaussian':
    theta, phi = x, kv_input  # θ and φ are the identity
  else:
    theta, phi = conv1x1(x, params['theta']), conv1x1(kv_input, params['phi'])
  g = conv1x1(kv_input, params['g'])
  if pool_position == 'after':
    phi, g = pool(phi), pool(g)

  concat_kernel = params['concat_project']['kernel'] if pairwise == 'concatenation' else None
  query_groups = position_groups(x.shape[1:-1], positions, temporal_groups)
  key_groups = position_groups(phi.shape[1:-1], positions, temporal_groups)
  assert sorted(query_groups) == sorted(key_groups), 'every query group needs its key group'

  y = np.zeros(x.shape[:-1] + (inter,))
  weights = {}
  for b in range(x.shape[0]):
    for label in sorted(query_groups):
      q_pos, k_pos = query_groups[label], key_groups[label]
      q = np.stack([theta[(b,) + p] for p in q_pos])
      k = np.stack([phi[(b,) + p] for p in k_pos])
      v = np.stack([g[(b,) + p] for p in k_pos])
      w = pairwise_weights(pairwise, q, k, inter_channels=inter, scale=scale, concat_kernel=concat_kernel)
      weights[(b, label)] = w
      for i, p in enumerate(q_pos):
        y[(b,) + p] = w[i] @ v

  wz = conv1x1(y, params['out'])
  wz_const = conv1x1(np.zeros_like(y), params['out'])  # W_z applied to y = 0: the bias alone
  batch_mean = batch_var = None
  if norm == 'batch':
    gamma, beta = params['bn']['scale'], params['bn']['bias']
    axes = tuple(range(wz.ndim - 1))
    if train:
      batch_mean = wz.mean(axis=axes)
      batch_var = ((wz - batch_mean) ** 2).mean(axis=axes)  # biased
      mean, var = batch_mean, batch_var
      offset = np.broadcast_to(beta, wz.shape)  # the batch mean removes every constant
    else:
      mean, var = batch_stats['bn']['mean'], batch_stats['bn']['var']
      offset = np.broadcast_to((wz_const - mean) / np.sqrt(var + eps) * gamma + beta, wz.shape)
    branch = (wz - mean) / np.sqrt(var + eps) * gamma + beta
  elif norm == 'affine':
    branch = wz * params['bn']['scale'] + params['bn']['bias']
    offset = np.broadcast_to(wz_const * params['bn']['scale'] + params['bn']['bias'], wz.shape)
  else:
    branch, offset = wz, np.broadcast_to(wz_const, wz.shape)
  z = branch + x
  parts = dict(y=y, weights=weights, branch=branch, offset=offset, batch_mean=batch_mean, batch_var=batch_var)
  return z, parts
