r"""Official weights -> a run directory, and a run's weights back to official names (the command line).

    python -m nonlocal_jax.convert --src=i3d_nonlocal_32x2_IN_pretrain_400k.pkl \
        --config=configs/kinetics_nl.py:arch=i3d,frames=32x2 --workdir=/tmp/nl_i3d_32x2
    python main.py --config=configs/kinetics_nl.py:arch=i3d,frames=32x2 --workdir=/tmp/nl_i3d_32x2 --mode=eval

    # ImageNet ResNet-50 (2D) -> I3D: kernels inflated, non-local blocks at identity, classifier new.
    python -m nonlocal_jax.convert --src=r50_imagenet.pkl --inflate \
        --config=configs/kinetics_nl.py:arch=i3d --workdir=/tmp/nl_i3d_from_in
    # Export a run's latest checkpoint with the official blob names: a Caffe2 pickle, or safetensors (PyTorch).
    python -m nonlocal_jax.convert --workdir=/tmp/nl_i3d_32x2 --export=/tmp/nl_i3d_32x2.pkl
    python -m nonlocal_jax.convert --workdir=/tmp/nl_i3d_32x2 --export=/tmp/nl_i3d_32x2.safetensors
    # An official model by name (nonlocal_jax.zoo): fetched into the zoo's cache, converted into the workdir.
    python -m nonlocal_jax.convert --zoo=i3d_nonlocal_32x2 --workdir=/tmp/nl_i3d_32x2

What is read, how names and layouts map, and what is refused: ``nonlocal_jax.blobs`` (the functions are
re-exported here). Weight files never run code (``nonlocal_jax.weight_files``).
"""

from __future__ import annotations

import json
from typing import Callable, Dict, Iterable, Optional

import flax
import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from nonlocal_jax import console
from nonlocal_jax import paths
from nonlocal_jax import safetensors_file
from nonlocal_jax import zoo
from nonlocal_jax.blobs import (SKIPPED, ConversionError, check_finite, convert_blobs, export_blobs, load_blobs,
                                pyslowfast_name, save_caffe2, torchvision_name)
from nonlocal_jax.training import Trainer
from nonlocal_jax.training import checkpoint as ckpt_lib
from nonlocal_jax.training import checks
from nonlocal_jax.training import parallel

# Written into exported safetensors headers: what the names and layouts are.
SAFETENSORS_METADATA = {'format': 'pt', 'names': 'caffe2 (facebookresearch/video-nonlocal-net blob names)',
                        'source': 'nonlocal_jax'}

# Written into a workdir that --zoo filled: which official model its step-0 checkpoint holds.
ZOO_MARKER = 'zoo.json'
# The data fields that define the test a published top-1 was measured with.
_TEST_FIELDS = ('num_frames', 'frame_stride', 'test_short_side', 'test_crop_size', 'test_num_clips', 'test_num_crops',
                'normalization')

__all__ = ['SKIPPED', 'ConversionError', 'check_finite', 'convert_blobs', 'convert_to_workdir', 'export_blobs',
           'export_workdir', 'load_blobs', 'pretrained_to_workdir', 'pyslowfast_name', 'save_caffe2',
           'torchvision_name']


# --- checkpoints ---------------------------------------------------------------------------------------------------


def convert_to_workdir(src: str, config, workdir: str, *, inflate: bool = False,
                       ignore: Iterable[str] = ()) -> dict:
  """Converts the file ``src`` for ``config`` and writes it as the step-0 training checkpoint of ``workdir``.

  ``main.py --mode=eval`` tests it, ``--mode=train`` fine-tunes from it, and ``config.train.init_checkpoint``
  can name ``workdir``. Returns the converted variables.
  """
  blobs = load_blobs(src)
  return _write_step0(config, workdir, lambda initial: convert_blobs(
      blobs, initial, inflate=inflate, ignore=ignore, epsilon=config.model.bn_epsilon))


def _write_step0(config, workdir: str, fill: Callable[[dict], dict]) -> dict:
  """Saves ``fill(initial variables of config's model)`` as the step-0 checkpoint of the empty ``workdir``."""
  manager = ckpt_lib.create_manager(workdir, asynchronous=False)
  if manager.latest_step() is not None:
    raise ConversionError(f'{ckpt_lib.checkpoint_dir(workdir)} already holds checkpoints: give an empty --workdir.')
  mesh = parallel.make_mesh()
  trainer = Trainer(config, mesh)
  state = trainer.init_state()
  initial = jax.device_get(trainer.variables(state))
  variables = fill(initial)
  params, batch_stats = parallel.replicate((variables['params'], variables.get('batch_stats', {})), mesh)
  state = state.replace(params=params, batch_stats=batch_stats if state.batch_stats else state.batch_stats)
  ckpt_lib.save(manager, state, batches_consumed=0)
  manager.wait_until_finished()
  manager.close()
  return variables


def pretrained_to_workdir(name: str, config, workdir: str, cache_dir: Optional[str] = None, *,
                          evaluate: bool = False) -> bool:
  """Writes the official model ``name``'s weights (``nonlocal_jax.zoo``) as the step-0 checkpoint of ``workdir``.

  What ``main.py --mode=eval --zoo=NAME`` runs before the test (with ``evaluate``: a config that cannot be
  tested, e.g. data not prepared, raises ConfigError before anything is downloaded). A workdir that holds them
  already (its ``zoo.json`` names the model and its one checkpoint is step 0) is kept as it is; one with other
  checkpoints is refused. ``config`` may differ from the model's own (``zoo.config_of``) in anything that keeps
  the parameters' names and shapes; the differences that change the function or the test are said on the console,
  since the published top-1 is for the model's own config. Returns whether a checkpoint was written.
  """
  model = zoo.get(name)
  if evaluate:  # What would stop the test later is checked before the download and the conversion.
    checks.check_workdir(workdir)
    checks.check_config(config)
    checks.check_data(config)
    checks.check_classes(config)
  marker = paths.as_path(workdir) / ZOO_MARKER
  steps = ckpt_lib.steps_on_disk(ckpt_lib.checkpoint_dir(workdir))
  if steps:
    if steps == [0] and marker.exists() and json.loads(marker.read_text()).get('name') == name:
      console.info('Using the %s weights already in %s.', name, ckpt_lib.checkpoint_dir(workdir))
      return False
    raise ConversionError(f'{ckpt_lib.checkpoint_dir(workdir)} already holds checkpoints that are not those of '
                          f'--zoo={name}: give an empty --workdir.')
  differences = _differences(config, zoo.config_of(model))
  if differences:
    console.info('This config differs from the one %s was published with (%s): its published top-1, %s, is for '
                 '%s.', name, '; '.join(differences), model.top1, model.flags())
  loaded = zoo.load_pretrained(name, cache_dir)

  def fill(initial):
    out = {}
    for part in ('params', 'batch_stats'):
      out[part], report = ckpt_lib.merge_matching(initial.get(part) or {}, loaded.get(part) or {})
      wrong = {k: v for k, v in report.items() if k != 'loaded' and v}
      if wrong:
        listed = '; '.join(f'{k}: {", ".join(v[:3])}{" ..." if len(v) > 3 else ""}' for k, v in wrong.items())
        raise ConversionError(f'The weights of {name} do not fit this config ({part} {listed}): use its config, '
                              f'{model.flags()}.')
    return out

  paths.as_path(workdir).mkdir(parents=True, exist_ok=True)
  # Before the checkpoint: a run stopped in between leaves a marker and no checkpoint, which a rerun rewrites.
  paths.write_atomic(marker, json.dumps({'name': name, 'source': model.source}).encode())
  _write_step0(config, workdir, fill)
  return True


def _differences(config, published) -> list:
  """'field=value (published: other)' for the model fields and test settings where ``config`` differs."""
  def fields(c):
    flat = {f'model.{k}': v for k, v in flax.traverse_util.flatten_dict(c.model.to_dict(), sep='.').items()}
    flat.update({f'data.{k}': c.data.get(k) for k in _TEST_FIELDS})
    return flat
  mine, theirs = fields(config), fields(published)
  return [f'{k}={mine.get(k)!r} (published: {theirs.get(k)!r})' for k in sorted(set(mine) | set(theirs))
          if mine.get(k) != theirs.get(k)]


def export_workdir(workdir: str, path: str, step: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Writes the checkpoint of a run (latest unless ``step``) with the official blob names; returns the blobs.

  ``path`` ending in ``.safetensors``: a safetensors file (float32 tensors in the official layouts, which are
  PyTorch's: conv (C_out, C_in, kT, kH, kW), classifier (K, C)) that ``safetensors.torch.load_file`` reads;
  otherwise a Caffe2 pickle. Both load back here to identical arrays.
  """
  blobs = export_blobs(ckpt_lib.load_variables(workdir, step))
  check_finite(blobs, f'The checkpoint of {workdir}')
  if path.endswith('.safetensors'):
    safetensors_file.save(blobs, path, SAFETENSORS_METADATA)
  else:
    save_caffe2(blobs, path)
  return blobs


def main(argv):
  """The command line (see the module docstring)."""
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.INFO)
  if not f.workdir:
    raise SystemExit('Error: pass --workdir=DIR, where the converted checkpoint is written (or read, with --export).')
  try:
    if f.zoo:
      config = f.config or zoo.config_of(zoo.get(f.zoo))
      pretrained_to_workdir(f.zoo, config, f.workdir)
      print(f'Wrote the weights of {f.zoo} to the step-0 checkpoint of {f.workdir}.')
      return
    if f.export:
      blobs = export_workdir(f.workdir, f.export)
      print(f'Wrote {len(blobs)} blobs to {f.export}.')
      return
    if not f.src or f.config is None:
      raise SystemExit('Error: pass --src=FILE and --config=configs/<name>.py[:args] (or --export=FILE.pkl or '
                       'FILE.safetensors).')
    ignore = [p for p in (f.ignore or '').split(',') if p]
    variables = convert_to_workdir(f.src, f.config, f.workdir, inflate=f.inflate, ignore=ignore)
  except (ConversionError, FileNotFoundError, ImportError, ValueError) as e:  # ZooError, ConfigError too.
    raise SystemExit(f'Error: {e}') from None
  count = sum(np.size(v) for v in jax.tree.leaves(variables))
  print(f'Wrote {count} weights from {f.src} to the step-0 checkpoint of {f.workdir}.')


def _define_flags():
  config_flags.DEFINE_config_file('config', None, 'Config of the target model (configs/kinetics_nl.py:arch=i3d).',
                                  lock_config=True)
  flags.DEFINE_string('src', None, 'Checkpoint to convert: Caffe2 .pkl, .npz, .safetensors, or PySlowFast .pyth.')
  flags.DEFINE_string('workdir', None, 'Run directory to write the converted checkpoint to (or export from).')
  flags.DEFINE_bool('inflate', False, 'The source is a 2D ImageNet ResNet: inflate it into the video model.')
  flags.DEFINE_string('ignore', '', 'Comma-separated regexes of blob/variable names to skip (matched in full).')
  flags.DEFINE_string('zoo', None, 'Write the official model NAME (nonlocal_jax.zoo: downloaded, verified, converted) '
                      'as the step-0 checkpoint of --workdir; --config defaults to its own.')
  flags.DEFINE_string('export', None, 'Write the latest checkpoint of --workdir here instead: FILE.pkl (Caffe2) or '
                      'FILE.safetensors (PyTorch), with the official names.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
