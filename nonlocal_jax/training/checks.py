"""Start-up checks: the workdir, the data and the config are checked before any work, each failure in one
sentence that says what to change (``ConfigError``); ``startup`` runs them all and returns the mesh."""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils

from nonlocal_jax import console
from nonlocal_jax import paths
from nonlocal_jax.data import builders
from nonlocal_jax.data import prepare
from nonlocal_jax.models import build_model
from nonlocal_jax.training import optim
from nonlocal_jax.training import parallel
from nonlocal_jax.training.state import dummy_input


class ConfigError(ValueError):
  """The config or the workdir cannot work; the message says what to change. Raised before any training."""


def check_workdir(workdir: str) -> None:
  """Raises ConfigError unless ``workdir`` exists (or can be created) and is writable."""
  if not workdir:
    raise ConfigError('No workdir given: pass --workdir=DIR, a directory for checkpoints and metrics.')
  try:
    directory = paths.as_path(workdir)
  except ValueError as e:
    raise ConfigError(f'The workdir {workdir} is on a file system this installation cannot reach: pass a local '
                      '--workdir or a gs:// one.') from e
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f'.write_test_{jax.process_index()}'
    probe.write_text('ok')
    probe.unlink()
  except paths.errors(workdir) as e:
    raise ConfigError(f'The workdir {workdir} is not writable ({paths.describe_error(e)}): pass a --workdir you '
                      'can write to.') from e


def check_checkpoints(workdir: str) -> None:
  """Raises ConfigError if ``<workdir>/checkpoints`` exists but cannot be written, or if every checkpoint of the run
  was found damaged (moved to ``checkpoints_damaged`` by a restore): a rerun must not silently start from scratch."""
  directory = paths.as_path(workdir)
  checkpoints = directory / 'checkpoints'
  try:
    if not checkpoints.exists():
      return  # orbax creates it; the workdir is known to be writable.
    probe = checkpoints / f'.write_test_{jax.process_index()}'
    probe.write_text('ok')
    probe.unlink()
  except paths.errors(workdir) as e:
    raise ConfigError(f'The checkpoints directory {checkpoints} cannot be written ({paths.describe_error(e)}): make '
                      'it a writable directory or pass another --workdir.') from e
  damaged = directory / 'checkpoints_damaged'  # checkpoint.damaged_dir
  if damaged.is_dir() and any(damaged.iterdir()) and not any(p.name.isdigit() for p in checkpoints.iterdir()):
    raise ConfigError(f'No checkpoint in {checkpoints} is intact (the damaged ones are in {damaged}): to train from '
                      f'scratch, delete {damaged} and rerun, or pass another --workdir.')


def check_data(config) -> None:
  """Raises ConfigError if the dataset is not prepared; generates a missing synthetic one if allowed."""
  d = config.data
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


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def check_config(config) -> None:
  """Raises ConfigError naming the field when the config cannot train (checked before any work starts)."""
  t, d = config.train, config.data
  devices = jax.device_count()
  positive = [('train.num_steps', t.num_steps), ('train.accumulation_steps', t.accumulation_steps),
              ('train.log_every_steps', t.log_every_steps), ('train.checkpoint_every_steps',
                                                             t.checkpoint_every_steps),
              ('train.keep_checkpoints', t.keep_checkpoints), ('train.base_batch_size', t.base_batch_size)]
  for field, value in positive:
    if value < 1:
      raise ConfigError(f'config.{field}={value} must be at least 1.')
  if t.schedule not in ('step', 'cosine', 'constant'):
    raise ConfigError(f"config.train.schedule={t.schedule!r} must be 'step', 'cosine' or 'constant'.")
  per_update = devices * t.accumulation_steps
  if d.global_batch_size % per_update:
    raise ConfigError(f'config.data.global_batch_size={d.global_batch_size} must be a multiple of the {devices} '
                      f'devices × train.accumulation_steps={t.accumulation_steps}: change it to a multiple of '
                      f'{per_update}.')
  if d.eval_global_batch_size < 1 or d.eval_global_batch_size % devices:
    raise ConfigError(f'config.data.eval_global_batch_size={d.eval_global_batch_size} must be a multiple of the '
                      f'{devices} devices: change it to a multiple of {devices}.')
  try:
    optim.check_regexes(t)
    model = build_model(config.model)
    model.check_input(dummy_input(config).shape)
  except ValueError as e:
    raise ConfigError(f'{e}'.rstrip('.') + ' (config.model / config.data).') from e
  if t.init_checkpoint and not _is_dir(t.init_checkpoint):
    raise ConfigError(f'config.train.init_checkpoint={t.init_checkpoint} is not a directory: give the workdir '
                      'of a finished run.')


def check_classes(config) -> None:
  """Raises ConfigError unless the model has as many outputs as the (prepared) dataset has classes."""
  classes = builders.num_classes(config.data)
  if classes != config.model.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes} but dataset {config.data.name!r} has '
                      f'{classes} classes: set --config.model.num_classes={classes}.')


def _is_dir(path: str) -> bool:
  try:
    return paths.expand(path).is_dir()
  except ValueError:  # A scheme epath does not know: no directory there that this run could read.
    return False


def startup(config, workdir: str):
  """Multi-host initialisation and every start-up check; returns the mesh. Raises ConfigError.

  Once the workdir is known to be writable, the console (if main.py set it up) starts the log file there.
  """
  parallel.initialize_distributed(config.get('multihost'))
  check_workdir(workdir)
  check_checkpoints(workdir)
  console.log_to_workdir(workdir, jax.process_index())
  check_config(config)  # Before check_data, which may spend a minute generating a synthetic dataset.
  check_data(config)
  check_classes(config)
  return parallel.make_mesh()
