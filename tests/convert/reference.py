"""An independent NumPy description of the official video networks: blobs with the official names and shapes,
and the forward pass written from docs/paper.md §2-§3 and the official code (not from nonlocal_jax.models).

Layout here is channels-last (B, T, H, W, C) float64; blobs are Caffe2's (C_out, C_in, kT, kH, kW).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Arch:
  """A small official-style network: stages, width, temporal kernels, non-local placement, stem and norm."""
  stage_sizes: Tuple[int, ...] = (1, 2, 2, 2)
  width: int = 4
  num_classes: int = 5
  i3d: bool = False
  nonlocal_after: Tuple[Tuple[int, ...], ...] = ((), (1,), (0,), ())  # res2..res5
  stem: str = '8x8'
  affine: bool = False
  res3_groups: Optional[int] = None
  stem_pool_padding: int = 1  # spatial padding of pool1: 1 as PySlowFast (the project's default), 0 as Caffe2

  def inflated(self, stage: int, block: int) -> bool:
    """Official use_temp_convs: all of res2, alternate blocks of res3/res4 from 0, of res5 from 1."""
    if not self.i3d:
      return False
    if stage == 2:
      return True
    if stage == 5:
      return block % 2 == 1
    return block % 2 == 0


def _bn_blobs(rng, prefix, c, affine, with_stats=False):
  out = {f'{prefix}_s': rng.uniform(0.5, 1.5, c), f'{prefix}_b': rng.normal(0, 0.2, c)}
  if not affine or with_stats:
    out[f'{prefix}_rm'] = rng.normal(0, 0.3, c)
    out[f'{prefix}_riv'] = rng.uniform(0.5, 2.0, c)
  return out


def _conv_blob(rng, c_out, c_in, k):
  return rng.normal(0, np.sqrt(2.0 / (c_in * np.prod(k))), (c_out, c_in) + tuple(k))


def make_blobs(arch: Arch, seed: int = 0, *, two_d: bool = False, stats_in_affine: bool = False,
               extras: bool = True) -> Dict[str, np.ndarray]:
  """Random float32 blobs with the official names and shapes (a 2D ImageNet network if ``two_d``)."""
  rng = np.random.default_rng(seed)
  b = {}
  w = arch.width
  k1 = (7, 7) if two_d else ((5 if arch.i3d else 1), 7, 7)
  b['conv1_w'] = _conv_blob(rng, w, 3, k1)
  b.update(_bn_blobs(rng, 'res_conv1_bn', w, arch.affine, stats_in_affine))
  c_in = w
  for stage, n in zip((2, 3, 4, 5), arch.stage_sizes):
    inner = w * 2 ** (stage - 2)
    out = 4 * inner
    for i in range(n):
      p = f'res{stage}_{i}'
      ka = (3, 1, 1) if arch.inflated(stage, i) else (1, 1, 1)
      kb = (1, 3, 3)
      ka, kb, kc = (ka[1:], kb[1:], (1, 1)) if two_d else (ka, kb, (1, 1, 1))
      b[f'{p}_branch2a_w'] = _conv_blob(rng, inner, c_in, ka)
      b[f'{p}_branch2b_w'] = _conv_blob(rng, inner, inner, kb)
      b[f'{p}_branch2c_w'] = _conv_blob(rng, out, inner, kc)
      for part, c in (('a', inner), ('b', inner), ('c', out)):
        b.update(_bn_blobs(rng, f'{p}_branch2{part}_bn', c, arch.affine, stats_in_affine))
      if i == 0:
        b[f'{p}_branch1_w'] = _conv_blob(rng, out, c_in, kc)
        b.update(_bn_blobs(rng, f'{p}_branch1_bn', out, arch.affine, stats_in_affine))
      c_in = out
      if i in arch.nonlocal_after[stage - 2] and not two_d:
        q = f'nonlocal_conv{stage}_{i}'
        half = out // 2
        for part, (co, ci) in (('theta', (half, out)), ('phi', (half, out)), ('g', (half, out)),
                               ('out', (out, half))):
          b[f'{q}_{part}_w'] = rng.normal(0, 0.3 if part != 'out' else 0.2, (co, ci, 1, 1, 1))
          b[f'{q}_{part}_b'] = rng.normal(0, 0.1, co)
        b.update(_bn_blobs(rng, f'{q}_bn', out, arch.affine, stats_in_affine))
  b['pred_w'] = rng.normal(0, 0.005, (arch.num_classes, c_in))
  b['pred_b'] = rng.normal(0, 0.1, arch.num_classes)
  b = {k: v.astype(np.float32) for k, v in b.items()}
  if extras:
    # What the Caffe2 trainer also saves; a converter must skip it.
    b['model_iter'] = np.array(400000)
    b['lr'] = np.array(0.0001, np.float32)
    b['conv1_w_momentum'] = np.zeros_like(b['conv1_w'])
  return b


# --- the forward pass -------------------------------------------------------------------------------------------


def conv(x, w, strides=(1, 1, 1)):
  """3D convolution, channels-last x (B,T,H,W,C), Caffe2 w (O,C,kT,kH,kW), zero padding k//2, as im2col."""
  o, c, kt, kh, kw = w.shape
  x = np.pad(x, ((0, 0), (kt // 2,) * 2, (kh // 2,) * 2, (kw // 2,) * 2, (0, 0)))
  st, sh, sw = strides
  b, t, h, wd, _ = x.shape
  to, ho, wo = (t - kt) // st + 1, (h - kh) // sh + 1, (wd - kw) // sw + 1
  cols = np.empty((b, to, ho, wo, c, kt, kh, kw))
  for dt in range(kt):
    for dh in range(kh):
      for dw in range(kw):
        cols[..., dt, dh, dw] = x[:, dt:dt + st * (to - 1) + 1:st, dh:dh + sh * (ho - 1) + 1:sh,
                                  dw:dw + sw * (wo - 1) + 1:sw]
  return np.einsum('bthwcijk,ocijk->bthwo', cols, w, optimize=True)


def max_pool(x, window, strides, pad=(0, 0, 0)):
  """Max pooling with symmetric padding (-inf) and floor output sizes."""
  x = np.pad(x, ((0, 0),) + tuple((p, p) for p in pad) + ((0, 0),), constant_values=-np.inf)
  out_shape = [(x.shape[1 + a] - window[a]) // strides[a] + 1 for a in range(3)]
  out = np.full((x.shape[0], *out_shape, x.shape[-1]), -np.inf)
  for dt in range(window[0]):
    for dh in range(window[1]):
      for dw in range(window[2]):
        out = np.maximum(out, x[:, dt:dt + strides[0] * (out_shape[0] - 1) + 1:strides[0],
                                dh:dh + strides[1] * (out_shape[1] - 1) + 1:strides[1],
                                dw:dw + strides[2] * (out_shape[2] - 1) + 1:strides[2]])
  return out


def norm(x, blobs, prefix, affine):
  """BatchNorm inference (running statistics), or the frozen-BN affine transform."""
  s, b = blobs[f'{prefix}_s'].astype(np.float64), blobs[f'{prefix}_b'].astype(np.float64)
  if affine:
    return x * s + b
  rm, riv = blobs[f'{prefix}_rm'].astype(np.float64), blobs[f'{prefix}_riv'].astype(np.float64)
  return (x - rm) / np.sqrt(riv + EPS) * s + b


def nonlocal_block(x, blobs, prefix, affine, groups=None):
  """Embedded Gaussian NL (official: x max-pooled (1,2,2) before φ and g, θᵀφ scaled by C'^-0.5), W_z, norm, +x."""
  def proj(t, part):
    w = blobs[f'{prefix}_{part}_w'][:, :, 0, 0, 0].astype(np.float64)
    return t @ w.T + blobs[f'{prefix}_{part}_b']
  b, t, h, w, c = x.shape
  pooled = max_pool(x, (1, 2, 2), (1, 2, 2))
  theta, phi, g = proj(x, 'theta'), proj(pooled, 'phi'), proj(pooled, 'g')
  k = groups or t  # Groups of consecutive frames attend among themselves.
  fold = lambda a: a.reshape(b * (t // k), -1, a.shape[-1])
  q, kk, v = fold(theta), fold(phi), fold(g)
  logits = q @ kk.transpose(0, 2, 1) * q.shape[-1] ** -0.5
  logits -= logits.max(-1, keepdims=True)
  att = np.exp(logits)
  att /= att.sum(-1, keepdims=True)
  y = (att @ v).reshape(b, t, h, w, -1)
  return norm(proj(y, 'out'), blobs, f'{prefix}_bn', affine) + x


STEMS = {  # conv1 stride, pool1 (window, stride, pad), pool2 (window, stride): docs/paper.md §3; pool1 padded (0,1,1).
    '8x8': ((1, 2, 2), ((1, 3, 3), (1, 2, 2), (0, 1, 1)), ((2, 1, 1), (2, 1, 1))),
    '32x2': ((2, 2, 2), ((2, 3, 3), (2, 2, 2), (0, 1, 1)), ((2, 1, 1), (2, 1, 1))),
}


def forward(blobs, clips, arch: Arch, *, image: bool = False, return_res5: bool = False):
  """Logits (B, K) of the official network for clips (B, T, H, W, 3); ``image`` is the 2D ResNet (no pool2)."""
  blobs = {k: (v[:, :, None] if image and np.ndim(v) == 4 else v) for k, v in blobs.items()}
  relu = lambda a: np.maximum(a, 0)
  conv1_stride, pool1, pool2 = STEMS['8x8' if image else arch.stem]
  x = relu(norm(conv(clips.astype(np.float64), blobs['conv1_w'], conv1_stride), blobs, 'res_conv1_bn',
                arch.affine))
  if not image:
    window, strides, _ = pool1
    pool1 = (window, strides, (0, arch.stem_pool_padding, arch.stem_pool_padding))
  x = max_pool(x, *pool1)
  for stage, n in zip((2, 3, 4, 5), arch.stage_sizes):
    if stage == 3 and not image:
      x = max_pool(x, *pool2)
    for i in range(n):
      p = f'res{stage}_{i}'
      stride = (1, 2, 2) if stage > 2 and i == 0 else (1, 1, 1)
      y = relu(norm(conv(x, blobs[f'{p}_branch2a_w']), blobs, f'{p}_branch2a_bn', arch.affine))
      y = relu(norm(conv(y, blobs[f'{p}_branch2b_w'], stride), blobs, f'{p}_branch2b_bn', arch.affine))
      y = norm(conv(y, blobs[f'{p}_branch2c_w']), blobs, f'{p}_branch2c_bn', arch.affine)
      if i == 0:
        x = norm(conv(x, blobs[f'{p}_branch1_w'], stride), blobs, f'{p}_branch1_bn', arch.affine)
      x = relu(y + x)
      if f'nonlocal_conv{stage}_{i}_theta_w' in blobs:
        x = nonlocal_block(x, blobs, f'nonlocal_conv{stage}_{i}', arch.affine,
                           arch.res3_groups if stage == 3 else None)
  if return_res5:
    return x
  pooled = x.mean(axis=(1, 2, 3))
  return pooled @ blobs['pred_w'].astype(np.float64).reshape(arch.num_classes, -1).T + blobs['pred_b']
