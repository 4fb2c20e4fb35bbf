"""Caffe2 blobs <-> Flax variables: reading any supported weight file into official names, mapping blobs onto a
model's variables (strictly), and the inverse for export. No training here: ``nonlocal_jax.convert`` (the command
line, run directories) and ``nonlocal_jax.zoo`` (official checkpoints by name) stand on this module.

Weight files are untrusted: ``nonlocal_jax.weight_files`` reads them without ever running code from them
(restricted unpickling of blob pickles, ``.npz`` without pickles, ``.safetensors``,
``torch.load(weights_only=True)``), and weights that are not finite are refused.

Sources (by content, not only by extension):
- Caffe2 ``.pkl``: ``{'blobs': {name: array}}`` (Python 2 pickle) or a top-level dict of blobs; names as in
  ``nonlocal_jax.models.naming`` (conv (C_out, C_in, kT, kH, kW); BN ``_s _b _rm _riv``; ``pred_w`` (K, C)).
- ``.npz`` / ``.safetensors`` / pickled dict of NumPy arrays with Caffe2 names, or torchvision ResNet names
  (``layer1.0.conv1.weight``).
- PySlowFast ``.pyth`` (needs PyTorch, an optional dependency): ``s1.pathway0_stem.conv.weight``,
  ``s2.pathway0_res0.branch2.a.weight``, ``s3.pathway0_nonlocal1.conv_theta.weight``, ``head.projection.weight``.

Every variable of the model must receive a blob of the right shape and every blob must be used (``model_iter``,
``lr`` and ``*_momentum`` are skipped); otherwise one error lists all the differences. Names matched in full by an
``ignore`` regex are skipped on both sides and their variables keep their initial values.

Frozen-BN ('affine') models: the official frozen-BN checkpoints (AffineNd) hold only ``_bn_s`` / ``_bn_b``,
which are the affine scale and bias. If a checkpoint for an affine model also holds ``_bn_rm`` / ``_bn_riv``
(a BatchNorm-trained network loaded into a frozen-BN one), they are folded: scale = s / sqrt(riv + eps),
bias = b - rm * scale, the same function as BatchNorm inference. Export writes the affine form (s, b).

Inflation: a 2D kernel (C_out, C_in, kH, kW) becomes 1×kH×kW for C2D and t×kH×kW with every temporal plane w / t
for I3D (so a clip of identical frames gives the 2D response away from the temporal borders); the source's
classifier is dropped and the non-local blocks keep their identity initialisation.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import flax
import jax
import numpy as np

from nonlocal_jax import paths
from nonlocal_jax import weight_files
from nonlocal_jax.models.naming import caffe2_names

SKIPPED = re.compile(r'^(model_iter|lr)$|_momentum$')
_BN_LEAVES = {'weight': 's', 'bias': 'b', 'running_mean': 'rm', 'running_var': 'riv'}


class ConversionError(ValueError):
  """The checkpoint does not fit the model; the message says what to change and lists every difference."""


# --- reading ---------------------------------------------------------------------------------------------------


def load_blobs(path: str) -> Dict[str, np.ndarray]:
  """Reads a checkpoint file into {Caffe2 blob name: array} (Caffe2 pkl, npz, PySlowFast/torchvision .pyth).

  The file is read by ``nonlocal_jax.weight_files``, which never runs code from it; weights that are not finite
  (NaN, Inf) are refused.
  """
  path = os.path.expanduser(path)  # A no-op on gs:// paths.
  blobs = _to_caffe2_names(weight_files.read_weight_file(path))
  check_finite(blobs, path)
  return blobs


def check_finite(blobs: Mapping[str, np.ndarray], source: str) -> None:
  """Raises ConversionError naming the blobs of ``source`` that hold NaN or Inf values."""
  bad = sorted(k for k, v in blobs.items() if np.issubdtype(np.asarray(v).dtype, np.inexact)
               and not np.all(np.isfinite(v)))
  if bad:
    shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
    raise ConversionError(f'{source} holds weights that are not finite (NaN or Inf) in {shown}: these are the '
                          'weights of a diverged run; use a checkpoint from before it diverged.')


def _array(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def pyslowfast_name(name: str) -> Optional[str]:
  """The Caffe2 blob name of a PySlowFast parameter (single pathway), or None for buffers without one."""
  if name.endswith('num_batches_tracked'):
    return None
  m = re.fullmatch(r's1\.pathway0_stem\.(conv|bn)\.(\w+)', name)
  if m:
    return 'conv1_w' if m[1] == 'conv' else _bn('res_conv1_bn', m[2])
  m = re.fullmatch(r's(\d)\.pathway0_res(\d+)\.(branch1|branch1_bn|branch2\.[abc]|branch2\.[abc]_bn)\.(\w+)', name)
  if m:
    prefix = f'res{m[1]}_{m[2]}_' + m[3].replace('.', '')
    return _bn(prefix, m[4]) if m[3].endswith('_bn') else f'{prefix}_w'
  m = re.fullmatch(r's(\d)\.pathway0_nonlocal(\d+)\.(conv_theta|conv_phi|conv_g|conv_out|bn)\.(\w+)', name)
  if m:
    prefix = f'nonlocal_conv{m[1]}_{m[2]}'
    if m[3] == 'bn':
      return _bn(f'{prefix}_bn', m[4])
    return f'{prefix}_{m[3][len("conv_"):]}_{"w" if m[4] == "weight" else "b"}'
  m = re.fullmatch(r'head\.projection\.(weight|bias)', name)
  if m:
    return 'pred_w' if m[1] == 'weight' else 'pred_b'
  return name


def torchvision_name(name: str) -> Optional[str]:
  """The Caffe2 blob name of a torchvision ResNet parameter, or None for buffers without one."""
  if name.endswith('num_batches_tracked'):
    return None
  m = re.fullmatch(r'(conv1|bn1|fc)\.(\w+)', name)
  if m:
    return {'conv1': 'conv1_w', 'bn1': _bn('res_conv1_bn', m[2]),
            'fc': 'pred_w' if m[2] == 'weight' else 'pred_b'}[m[1]]
  m = re.fullmatch(r'layer(\d)\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(\w+)', name)
  if m:
    prefix = f'res{int(m[1]) + 1}_{m[2]}_'
    part = m[3]
    if part.startswith('downsample'):
      return f'{prefix}branch1_w' if part.endswith('0') else _bn(f'{prefix}branch1_bn', m[4])
    branch = f'{prefix}branch2{"abc"[int(part[-1]) - 1]}'
    return f'{branch}_w' if part.startswith('conv') else _bn(f'{branch}_bn', m[4])
  return name


def _bn(prefix: str, leaf: str) -> str:
  return f'{prefix}_{_BN_LEAVES.get(leaf, leaf)}'


def _to_caffe2_names(state: Mapping) -> Dict[str, np.ndarray]:
  """Renames PySlowFast or torchvision state dicts to Caffe2 blob names; Caffe2 names pass through."""
  names = [str(k) for k in state]
  stripped = [n[len('module.'):] if n.startswith('module.') else n for n in names]
  if any(n.startswith('s1.pathway0_stem.') for n in stripped):
    rename = pyslowfast_name
  elif any(n.startswith('layer1.') for n in stripped):
    rename = torchvision_name
  else:
    rename = lambda n: n
  blobs = {}
  for key, name in zip(state, stripped):
    new = rename(name)
    if new is not None:
      blobs[new] = _array(state[key])
  return blobs


# --- Caffe2 blobs <-> Flax variables -----------------------------------------------------------------------------


def _from_caffe2(blob: np.ndarray, shape: Sequence[int], inflate: bool) -> Optional[np.ndarray]:
  """The blob in the layout of a variable of ``shape``, or None when it cannot take that shape."""
  shape = tuple(shape)
  if len(shape) == 5:  # Video conv (kT, kH, kW, C_in, C_out) <- (C_out, C_in, kT, kH, kW).
    if inflate and blob.ndim == 4:
      blob = blob[:, :, None]
    if blob.ndim != 5:
      return None
    value = blob.transpose(2, 3, 4, 1, 0)
    if inflate and value.shape[0] == 1 and shape[0] > 1:
      value = np.repeat(value, shape[0], axis=0) / shape[0]
  elif len(shape) == 4:  # Image conv (kH, kW, C_in, C_out) <- (C_out, C_in, kH, kW).
    if blob.ndim != 4:
      return None
    value = blob.transpose(2, 3, 1, 0)
  elif len(shape) == 2:  # Dense (C_in, C_out) <- FC (C_out, C_in) or 1×1×1 conv (C_out, C_in, 1, 1, 1).
    if blob.ndim < 2 or any(s != 1 for s in blob.shape[2:]):
      return None
    value = blob.reshape(blob.shape[:2]).T
  else:
    value = blob
  return value if value.shape == shape else None


def convert_blobs(blobs: Mapping[str, Any], variables: Mapping, *, inflate: bool = False,
                  ignore: Iterable[str] = (), epsilon: float = 1e-5) -> dict:
  """Maps Caffe2 blobs onto the variables of a model; returns {'params': ..., 'batch_stats': ...} of NumPy arrays.

  Args:
    blobs: {Caffe2 name: array}, e.g. from ``load_blobs``.
    variables: the model's variables ('params' and, for BatchNorm models, 'batch_stats'): arrays, or
      ShapeDtypeStructs when every variable is filled from the blobs.
    inflate: the blobs are a 2D ImageNet network: inflate its kernels, drop its classifier, and keep the
      given (initial) values of the non-local blocks and the classifier.
    ignore: regexes; blob or variable names they match in full are skipped and such variables keep their values.
    epsilon: BatchNorm epsilon, used to fold running statistics into the scale/bias of frozen-BN models.

  Raises:
    ConversionError: listing every variable without a blob, every blob of another shape and every unused blob.
  """
  patterns = [re.compile(p) for p in ignore]
  ignored = lambda name: any(p.fullmatch(name) for p in patterns)
  names = caffe2_names(variables)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dict(variables)))
  # Frozen-BN layers: an affine scale without running statistics beside it.
  affine = {n[:-2] for n, path in names.items()
            if path[0] == 'params' and path[-1] == 'scale' and f'{n[:-2]}_rm' not in names}
  kept = lambda n: inflate and n.startswith(('nonlocal_', 'pred_'))
  used, missing, mismatched, out = set(), [], [], {}

  def keep(name, path):
    value = flat[path]
    if isinstance(value, jax.ShapeDtypeStruct):
      raise ValueError(f'Variable {name} gets no blob, so it keeps its initial value: pass initialised variables '
                       '(model.init), not shapes.')
    out[path] = np.asarray(value)

  for name, path in sorted(names.items()):
    shape = tuple(flat[path].shape)
    if kept(name) or (name not in blobs and ignored(name)):
      keep(name, path)
      continue
    if name not in blobs:
      missing.append(f'{name} {shape}')
      continue
    used.add(name)
    blob = np.asarray(blobs[name], np.float64 if name[:-2] in affine else None)
    value = _from_caffe2(blob, shape, inflate)
    prefix, leaf = name.rsplit('_', 1)
    if value is not None and prefix in affine and f'{prefix}_riv' in blobs and f'{prefix}_rm' in blobs:
      used.update((f'{prefix}_rm', f'{prefix}_riv'))
      inv_std = 1.0 / np.sqrt(np.asarray(blobs[f'{prefix}_riv'], np.float64) + epsilon)
      scale = np.asarray(blobs[f'{prefix}_s'], np.float64) * inv_std
      value = scale if leaf == 's' else value - np.asarray(blobs[f'{prefix}_rm'], np.float64) * scale
    if value is None:
      if ignored(name):
        keep(name, path)
      else:
        mismatched.append(f'{name}: checkpoint {tuple(np.shape(blobs[name]))}, model {shape}')
      continue
    out[path] = np.asarray(value, dtype=flat[path].dtype)

  unused = [f'{n} {tuple(np.shape(v))}' for n, v in sorted(blobs.items())
            if n not in used and not SKIPPED.search(n) and not ignored(n) and not (inflate and n.startswith('pred_'))]
  if missing or mismatched or unused:
    parts = [f'{len(missing)} model variable(s) have no blob', f'{len(mismatched)} blob(s) have another shape',
             f'{len(unused)} blob(s) are not used']
    lines = [f'The checkpoint does not fit this model ({", ".join(parts)}): use the config the checkpoint was '
             'trained with (arch, depth, blocks, frames, norm; --inflate for a 2D ImageNet network), or skip '
             'names with --ignore=REGEX,...']
    for title, items in (('no blob', missing), ('other shape', mismatched), ('unused blob', unused)):
      lines += [f'  {title}: {item}' for item in items]
    raise ConversionError('\n'.join(lines))
  return flax.traverse_util.unflatten_dict(out)


def export_blobs(variables: Mapping) -> Dict[str, np.ndarray]:
  """Flax variables -> {Caffe2 blob name: float32 array} in the official layouts (inverse of ``convert_blobs``).

  Non-local 1×1×1 convs of video models are written (C_out, C_in, 1, 1, 1) and the classifier (K, C), as the
  official training checkpoints hold them; frozen-BN layers as their affine ``_s`` / ``_b``.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dict(variables)))
  video = any(np.ndim(v) == 5 for v in flat.values())
  blobs = {}
  for name, path in caffe2_names(variables).items():
    value = np.asarray(jax.device_get(flat[path]))
    if value.ndim == 5:
      value = value.transpose(4, 3, 0, 1, 2)
    elif value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 2:
      value = value.T
      if video and name.startswith('nonlocal_'):
        value = value.reshape(value.shape + (1, 1, 1))
    blobs[name] = np.ascontiguousarray(value)
  return blobs


def save_caffe2(blobs: Mapping[str, np.ndarray], path: str) -> None:
  """Writes ``{'blobs': blobs}`` as a protocol-2 pickle, which Python 2 Caffe2 tools and ``load_blobs`` read."""
  with paths.expand(path).open('wb') as f:
    pickle.dump({'blobs': {k: np.asarray(v) for k, v in blobs.items()}}, f, protocol=2)
