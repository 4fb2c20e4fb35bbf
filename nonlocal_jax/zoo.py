"""The official checkpoints by name: where each is published, the config it matches, its published top-1, loading.

    from nonlocal_jax import zoo
    variables = zoo.load_pretrained('i3d_nonlocal_32x2')   # {'params': ..., 'batch_stats': ...} (NumPy)

    python main.py --mode=eval --zoo=i3d_nonlocal_32x2 --workdir=/tmp/zoo/i3d_nl_32x2   # the published test
    python main.py --config=configs/kinetics_nl.py:arch=i3d --workdir=/tmp/ft \\
        --config.train.init_checkpoint=zoo:i3d_nonlocal_32x2                          # fine-tune from it
    python -m nonlocal_jax.zoo                                                         # the table

``MODELS`` is the one list of the models (the README's table is checked against ``markdown_table()``). A name is
written ``zoo:NAME`` wherever a path to weights is expected (``REFERENCE_PREFIX``: ``config.train.init_checkpoint``).

``load_pretrained`` looks for the file in the cache directory (``cache_dir``, else ``$NONLOCAL_JAX_ZOO_DIR``, else
``~/.cache/nonlocal_jax/zoo``), downloads it there when it is missing and the network allows (saying in one
sentence where to put it by hand when not), verifies it (the published sha256 when there is one; else the digest
recorded at download, the size the server announced and that it reads and converts), converts it strictly for its
config (``nonlocal_jax.blobs``) and caches the converted variables, keyed by the file's digest, so that the next
call reads them instead of converting again.

Trust: the official files are Caffe2 pickles, and loading a pickle can run code. This module loads only the files
of ``MODELS``, whose URLs are named here by this project (the authors' own model zoo), or files a user puts in the
cache by hand; and it loads every one through ``nonlocal_jax.weight_files``' restricted unpickler, which builds
only arrays, dicts, strings and numbers and runs nothing. The converted cache is an ``.npz`` read without pickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import os
import urllib.error
import urllib.request
import zipfile
from typing import Any, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from nonlocal_jax import blobs as blobs_lib
from nonlocal_jax import config_files
from nonlocal_jax import console
from nonlocal_jax import paths
from nonlocal_jax.models import build_model

REFERENCE_PREFIX = 'zoo:'
BASE_URL = 'https://dl.fbaipublicfiles.com/video-nonlocal/'
CACHE_ENV = 'NONLOCAL_JAX_ZOO_DIR'
DEFAULT_CACHE_DIR = '~/.cache/nonlocal_jax/zoo'
DOWNLOAD_TIMEOUT_S = 60
# Part of the converted files' names: bump it when the conversion changes, so that old conversions are not reused.
CONVERTED_VERSION = 1
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The Caffe2 code does not pad the stem max pool (this project pads it by 1, as PySlowFast does): without this the
# weights load but compute another function than the one whose top-1 was published.
OFFICIAL = (('model.stem_pool_padding', 0),)
FROZEN_128 = (('model.norm', 'affine'), ('data.num_frames', 128), ('data.frame_stride', 1))


class ZooError(ValueError):
  """A zoo model cannot be found, fetched, verified or converted; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Model:
  """One official checkpoint: its name here, file, the config it matches (file:variant + overrides), top-1."""
  name: str
  file: str
  config: str
  top1: float
  overrides: Tuple[Tuple[str, Any], ...] = OFFICIAL
  sha256: Optional[str] = None  # None: the authors published no checksum.
  url: Optional[str] = None  # None: BASE_URL + file.
  note: str = ''

  @property
  def source(self) -> str:
    """Where the file is downloaded from."""
    return self.url or BASE_URL + self.file

  def flags(self) -> str:
    """The config as main.py flags: ``--config=FILE:VARIANT --config.FIELD=VALUE ...``."""
    return ' '.join([f'--config={self.config}'] + [f'--config.{k}={v}' for k, v in self.overrides])


def _official(name: str, config: str, top1: float, overrides=(), pretrain: str = 'IN', note: str = '') -> Model:
  return Model(name, f'{name}_{pretrain}_pretrain_400k.pkl', config, top1, OFFICIAL + tuple(overrides), note=note)


# facebookresearch/video-nonlocal-net's model zoo (R50, Kinetics-400, top-1 of its README; no checksums published).
MODELS: Dict[str, Model] = {m.name: m for m in [
    _official('c2d_baseline_8x8', 'configs/kinetics_c2d.py:frames=8x8', 71.9),
    _official('c2d_nonlocal_8x8', 'configs/kinetics_nl.py:frames=8x8', 74.4),
    _official('i3d_baseline_8x8', 'configs/kinetics_c2d.py:arch=i3d,frames=8x8', 73.4),
    _official('i3d_nonlocal_8x8', 'configs/kinetics_nl.py:arch=i3d,frames=8x8', 74.7),
    _official('c2d_baseline_32x2', 'configs/kinetics_c2d.py', 72.0),
    _official('c2d_nonlocal_32x2', 'configs/kinetics_nl.py', 73.9),
    _official('i3d_baseline_32x2', 'configs/kinetics_c2d.py:arch=i3d', 73.6),
    _official('i3d_nonlocal_32x2', 'configs/kinetics_nl.py:arch=i3d', 74.9),
    _official('i3d_baseline_128x1', 'configs/kinetics_c2d.py:arch=i3d', 75.2, FROZEN_128, 'I3D', 'frozen BN'),
    _official('i3d_nonlocal_128x1', 'configs/kinetics_nl.py:arch=i3d', 76.5,
              FROZEN_128 + (('model.nonlocal_res3_temporal_groups', 4),), 'I3D', 'frozen BN'),
]}


def get(name: str) -> Model:
  """The model called ``name``; raises ZooError listing the names otherwise."""
  if name not in MODELS:
    raise ZooError(f'There is no zoo model {name!r}: use one of {", ".join(MODELS)}.')
  return MODELS[name]


def parse_reference(text: Optional[str]) -> Optional[str]:
  """The model name of ``zoo:NAME`` (checked: ZooError for an unknown one), or None for any other text."""
  if not text or not str(text).startswith(REFERENCE_PREFIX):
    return None
  return get(str(text)[len(REFERENCE_PREFIX):]).name


def config_of(model: Model):
  """The ConfigDict the weights of ``model`` belong to (its config file, variant and overrides)."""
  path, _, arg = model.config.partition(':')
  full = os.path.join(_ROOT, path)
  if not os.path.isfile(full):
    raise ZooError(f'{full} does not exist: the zoo needs the configs/ folder of the repository (run from a '
                   'checkout, or install with pip install -e).')
  config = config_files.load_module(full).get_config(arg or None)
  for field, value in model.overrides:
    *sections, leaf = field.split('.')
    node = config
    for section in sections:
      node = node[section]
    node[leaf] = value
  return config


def cache_directory(cache_dir: Optional[str] = None) -> str:
  """The zoo's cache: ``cache_dir``, else ``$NONLOCAL_JAX_ZOO_DIR``, else ``~/.cache/nonlocal_jax/zoo``."""
  return os.fspath(paths.expand(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR))


def load_pretrained(name: str, cache_dir: Optional[str] = None, *,
                    timeout: float = DOWNLOAD_TIMEOUT_S) -> Dict[str, Any]:
  """The converted variables ({'params': ..., 'batch_stats': ...}, NumPy) of the zoo model ``name``.

  The file comes from the cache, or is downloaded into it; it is verified, converted for ``config_of(model)`` and
  the conversion cached (see the module docstring). Raises ZooError, in one sentence, when the file cannot be
  downloaded (saying where to put it by hand), does not match its checksum, or is not the model's weights;
  nothing half-written is left in the cache.
  """
  model = get(name)
  directory = paths.as_path(cache_directory(cache_dir))
  file = directory / model.file
  recorded = directory / f'{model.file}.sha256'
  if not file.exists():
    if recorded.exists():  # The digest of a file since deleted: a copy put there by hand may differ.
      recorded.unlink()
    _download(model, file, recorded, timeout)
  data = file.read_bytes()
  digest = hashlib.sha256(data).hexdigest()
  expected = model.sha256 or (recorded.read_text().strip() if recorded.exists() else None)
  if expected and digest != expected:
    raise ZooError(f'{file} is damaged (its sha256 is {digest}, the file of {model.source} has {expected}): delete '
                   f'it so that it is downloaded again, or put a good copy there by hand.')
  converted = directory / 'converted' / f'{model.name}-{digest[:16]}-v{CONVERTED_VERSION}.npz'
  variables = _read_converted(converted)
  if variables is None:
    variables = _both(_convert(model, os.fspath(file)))
    converted.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(converted, _npz_bytes(variables))
  return variables


def _download(model: Model, file, recorded, timeout: float) -> None:
  """Fetches ``model.source`` into ``file`` (whole or not at all) and records its digest in ``recorded``."""
  by_hand = f'download {model.source} by hand and put it at {file}'
  console.info('Downloading %s to %s.', model.source, file)
  try:
    with urllib.request.urlopen(model.source, timeout=timeout) as response:
      announced = response.headers.get('Content-Length')
      data = response.read()
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
    reason = getattr(e, 'reason', None) or e
    raise ZooError(f'{model.name} is not in {file.parent} and cannot be downloaded ({reason}): {by_hand}.') from None
  if announced is not None and len(data) != int(announced):
    raise ZooError(f'The download of {model.source} stopped after {len(data)} of {announced} bytes: rerun, or '
                   f'{by_hand}.')
  digest = hashlib.sha256(data).hexdigest()
  if model.sha256 and digest != model.sha256:
    raise ZooError(f'The file downloaded from {model.source} is damaged (its sha256 is {digest}, not the published '
                   f'{model.sha256}): rerun, or {by_hand}.')
  file.parent.mkdir(parents=True, exist_ok=True)
  paths.write_atomic(recorded, f'{digest}\n'.encode())
  paths.write_atomic(file, data)


def _convert(model: Model, path: str) -> Dict[str, Any]:
  """The file at ``path`` converted strictly for the model's config; ZooError if it is not those weights."""
  config = config_of(model)
  network = build_model(config.model)
  d = config.data
  clip = jax.ShapeDtypeStruct((1, d.num_frames, d.crop_size, d.crop_size, 3), jnp.float32)
  abstract = jax.eval_shape(lambda x: network.init(jax.random.key(0), x, train=False), clip)
  try:
    blobs = blobs_lib.load_blobs(path)
    return blobs_lib.convert_blobs(blobs, abstract, epsilon=config.model.bn_epsilon)
  except ValueError as e:  # Unreadable, unsafe, not finite, or not this model's names and shapes.
    first = str(e).splitlines()[0]
    raise ZooError(f'{path} is not the weights of {model.name} ({first.rstrip(".")}): delete it so that it is '
                   'downloaded again, or put the official file there by hand.') from None


def _npz_bytes(variables: Dict[str, Any]) -> bytes:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep='/')
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in flat.items()})
  return buffer.getvalue()


def _read_converted(path) -> Optional[Dict[str, Any]]:
  """The cached conversion at ``path``, or None when there is none or it cannot be read (it is then redone)."""
  if not path.exists():
    return None
  try:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
      flat = {k: archive[k] for k in archive.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    console.info('The cached conversion %s cannot be read (%s): converting again.', path, type(e).__name__)
    return None
  return _both(flax.traverse_util.unflatten_dict(flat, sep='/'))


def _both(variables: Dict[str, Any]) -> Dict[str, Any]:
  """{'params': ..., 'batch_stats': ...} ({} for frozen-BN models), as ``checkpoint.load_variables`` returns."""
  return {k: variables.get(k) or {} for k in ('params', 'batch_stats')}


def markdown_table() -> str:
  """The README's table of ``MODELS``: name, file, published top-1, the config flags it matches."""
  lines = ['| name | file | published top-1 | config |', '|---|---|---|---|']
  for m in MODELS.values():
    note = f' ({m.note})' if m.note else ''
    lines.append(f'| `{m.name}` | [{m.file}]({m.source}){note} | {m.top1} | `{m.flags()}` |')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown_table())
