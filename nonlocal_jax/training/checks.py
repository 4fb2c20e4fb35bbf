"""Start-up checks: the workdir, the data and the config are checked before any work, each failure in one
sentence that says what to change (``ConfigError``); ``startup`` runs them all and returns the mesh."""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils
from jax.experimental.compilation_cache import compilation_cache

from nonlocal_jax import config_ranges
from nonlocal_jax import console
from nonlocal_jax import paths
from nonlocal_jax import zoo
from nonlocal_jax.data import fake
# Imported at their first use (they import TensorFlow): a fake-data run, which needs none of them, never loads it.
from nonlocal_jax.data.entry import builders, prepare, transforms
from nonlocal_jax.models import build_model
from nonlocal_jax.training import checkpoint as ckpt_lib
from nonlocal_jax.training.errors import ConfigError
from nonlocal_jax.training import parallel
from nonlocal_jax.training.state import dummy_input


def check_workdir(workdir: str, *, create: bool = True) -> None:
  """Raises ConfigError unless ``workdir`` exists (or, if ``create``, can be created) and is writable."""
  if not workdir:
    raise ConfigError('No workdir given: pass --workdir=DIR, a directory for checkpoints and metrics.')
  try:
    directory = paths.as_path(workdir)
  except ValueError as e:
    raise ConfigError(f'The workdir {workdir} is on a file system this installation cannot reach: pass a local '
                      '--workdir or a gs:// one.') from e
  try:
    if not create and not directory.is_dir():
      raise ConfigError(f'The workdir {workdir} does not exist: pass the --workdir of a run that has trained '
                        '(--mode=eval reads its checkpoints).')
    directory.mkdir(parents=True, exist_ok=True)
    _write_probe(directory)
  except paths.errors(workdir) as e:
    raise ConfigError(f'The workdir {workdir} is not writable ({paths.describe_error(e)}): pass a --workdir you '
                      'can write to.') from e


def _write_probe(directory) -> None:
  """Writes and removes a small file in ``directory``: raises what a checkpoint or result write would raise."""
  probe = directory / f'.write_test_{jax.process_index()}'
  probe.write_text('ok')
  probe.unlink()


def check_checkpoints(workdir: str) -> None:
  """Raises ConfigError if ``<workdir>/checkpoints`` exists but cannot be written, or if every checkpoint of the run
  was found damaged (moved to ``checkpoints_damaged`` by a restore): a rerun must not silently start from scratch."""
  checkpoints = paths.as_path(ckpt_lib.checkpoint_dir(workdir))
  try:
    if not checkpoints.exists():
      return  # orbax creates it; the workdir is known to be writable.
    _write_probe(checkpoints)
  except paths.errors(workdir) as e:
    raise ConfigError(f'The checkpoints directory {checkpoints} cannot be written ({paths.describe_error(e)}): make '
                      'it a writable directory or pass another --workdir.') from e
  damaged = ckpt_lib.damaged_dir(checkpoints)
  if damaged.is_dir() and any(damaged.iterdir()) and not ckpt_lib.steps_on_disk(checkpoints):
    raise ConfigError(ckpt_lib.no_intact_checkpoint(checkpoints))


def check_evaluable(workdir: str) -> None:
  """Raises ConfigError (creating nothing) unless ``workdir`` holds a checkpoint to evaluate."""
  directory = paths.as_path(ckpt_lib.checkpoint_dir(workdir))
  try:
    found = bool(ckpt_lib.steps_on_disk(directory))
  except paths.errors(workdir) as e:
    raise ConfigError(f'The checkpoints in {directory} cannot be read ({paths.describe_error(e)}): pass a --workdir '
                      'you can read.') from e
  if not found:
    raise ConfigError(f'There is no checkpoint in {directory}: train first (--mode=train).')


def check_data(config) -> None:
  """Raises ConfigError if the dataset is not prepared; generates a missing synthetic one if allowed.

  Fake data (``data.name='fake'``) is generated on the devices: there is nothing to check and nothing is read.
  """
  d = config.data
  if fake.is_fake(d):
    return
  splits = [d.train_split, d.eval_split]
  name = builders.resolve_name(d.name)
  try:
    builders.check_prepared(d.name, d.data_dir, splits, d.get('synthetic'))
    return
  except builders.DatasetNotPreparedError as e:
    if not (name.startswith('synthetic_long_range') and config.train.auto_prepare_synthetic):
      raise ConfigError(str(e)) from e
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if jax.process_index() == 0:
    if d.data_dir:
      paths.expand(d.data_dir).mkdir(parents=True, exist_ok=True)
    prepare.prepare_synthetic(name, d.data_dir or '~/tensorflow_datasets', **dict(d.synthetic.items()))
  _barrier('synthetic_prepared')


def use_compilation_cache(config) -> None:
  """Points JAX's persistent compilation cache at ``config.compilation_cache_dir``, created if missing; raises
  ConfigError if it cannot be written there. None leaves JAX's own setting (``JAX_COMPILATION_CACHE_DIR``)."""
  directory = config.get('compilation_cache_dir')
  if directory is None:
    return
  try:
    path = paths.expand(directory)
    path.mkdir(parents=True, exist_ok=True)
    _write_probe(path)
  except ValueError as e:  # A file system this installation cannot reach.
    raise ConfigError(f'config.compilation_cache_dir: {e}') from None
  except paths.errors(directory) as e:
    raise ConfigError(f'config.compilation_cache_dir={directory} cannot be written ({paths.describe_error(e)}): pass '
                      'a directory you can write to, or leave it unset.') from e
  if jax.config.jax_compilation_cache_dir != str(path):
    compilation_cache.set_cache_dir(str(path))
    # JAX opens its cache once per process: one opened before (an earlier run in this notebook or test process)
    # would otherwise keep being used.
    compilation_cache.reset_cache()


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def check_ranges(config) -> None:
  """Raises ConfigError naming the first field outside the range configs/default.py declares for it."""
  try:
    config_ranges.check(config)
  except config_ranges.OutOfRange as e:
    raise ConfigError(str(e)) from None


def check_config(config) -> None:
  """Raises ConfigError naming the field when the config cannot train (checked before anything is built).

  First every field's declared range (configs/default.py, ``nonlocal_jax.config_ranges``), then what involves
  several fields or the machine: batches divisible by the devices, the data settings across fields, the model's
  own fields and its input size, init_checkpoint.
  """
  check_ranges(config)
  t, d = config.train, config.data
  devices = jax.device_count()
  per_update = devices * t.accumulation_steps
  if d.global_batch_size % per_update:
    raise ConfigError(f'config.data.global_batch_size={d.global_batch_size} must be a multiple of the {devices} '
                      f'devices × train.accumulation_steps={t.accumulation_steps}: change it to a multiple of '
                      f'{per_update}.')
  if d.eval_global_batch_size % devices:
    raise ConfigError(f'config.data.eval_global_batch_size={d.eval_global_batch_size} must be a multiple of the '
                      f'{devices} devices: change it to a multiple of {devices}.')
  if not fake.is_fake(d):  # Fake batches are generated at crop_size: no frames are resized or digits drawn.
    try:
      transforms.check_settings(d, 'video' if config.model.name == 'resnet_video' else 'image')
    except ValueError as e:
      raise ConfigError(str(e)) from None
    s = d.get('synthetic')
    if builders.resolve_name(d.name).startswith('synthetic_long_range') and s and s.digit_size > s.size:
      raise ConfigError(f'config.data.synthetic.digit_size={s.digit_size} must be at most synthetic.size={s.size}: '
                        'fix it in the config.')
  try:
    model = build_model(config.model)
    model.check_input(dummy_input(config).shape)
  except ValueError as e:
    raise ConfigError(f'{e}'.rstrip('.') + ' (config.model / config.data).') from e
  try:
    official = zoo.parse_reference(t.init_checkpoint)
  except zoo.ZooError:
    raise ConfigError(f'config.train.init_checkpoint={t.init_checkpoint} names no official model: use '
                      f'{zoo.REFERENCE_PREFIX}NAME with NAME one of {", ".join(zoo.MODELS)}.') from None
  if t.init_checkpoint and official is None and not _is_dir(t.init_checkpoint):
    raise ConfigError(f'config.train.init_checkpoint={t.init_checkpoint} is not a directory: give the workdir '
                      f'of a finished run, or {zoo.REFERENCE_PREFIX}NAME for an official model.')


def check_classes(config) -> None:
  """Raises ConfigError unless the model has as many outputs as the (prepared) dataset has classes (fake data has
  config.model.num_classes)."""
  if fake.is_fake(config.data):
    return
  classes = builders.num_classes(config.data)
  if classes != config.model.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes} but dataset {config.data.name!r} has '
                      f'{classes} classes: set --config.model.num_classes={classes}.')


def _is_dir(path: str) -> bool:
  try:
    return paths.expand(path).is_dir()
  except ValueError:  # A scheme epath does not know: no directory there that this run could read.
    return False


def startup(config, workdir: str, *, evaluate: bool = False):
  """Multi-host initialisation and every start-up check; returns the mesh. Raises ConfigError.

  With ``evaluate``, ``workdir`` must already exist and hold a checkpoint (nothing is created before that is
  known). Once the workdir is known to be writable, the console (if main.py set it up) starts the log file there.
  """
  check_ranges(config)  # Before the multihost fields reach jax.distributed.
  if evaluate and fake.is_fake(config.data):
    raise ConfigError(f'config.data.name={fake.NAME!r} has no test set (its labels are random): evaluate with the '
                      'dataset the run should be tested on, --config.data.name=NAME.')
  parallel.initialize_distributed(config.get('multihost'))
  check_workdir(workdir, create=not evaluate)
  if evaluate:
    check_evaluable(workdir)  # Reads only: an evaluation may be of a run it cannot write to.
  else:
    check_checkpoints(workdir)
  console.log_to_workdir(workdir, jax.process_index())
  use_compilation_cache(config)  # Before any program is compiled, and before the minutes check_data may take.
  check_config(config)  # Before check_data, which may spend a minute generating a synthetic dataset.
  check_data(config)
  check_classes(config)
  return parallel.make_mesh()
