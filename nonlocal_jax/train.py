"""Training: ``train_and_evaluate(config, workdir)`` (main.py and notebooks call it) and its pure steps.

The steps are written for one device and mapped over a 1-D mesh with ``jax.shard_map`` (``nonlocal_jax.parallel``):
gradients and metrics are averaged over the ``'batch'`` axis; BatchNorm uses each device's share of the batch
(as the paper: 8 clips per GPU) unless ``config.model.bn_axis_name='batch'`` synchronises it, and its running
averages are averaged over devices after each step so that the state stays replicated. A run resumes from the
latest checkpoint in ``workdir``, with the data stream at the same position, so an interrupted run ends with
the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax import lax

from nonlocal_jax import checkpoint as ckpt_lib
from nonlocal_jax import optim
from nonlocal_jax import parallel
from nonlocal_jax import paths
from nonlocal_jax.parallel import AXIS, P


class ConfigError(ValueError):
  """The config or the workdir cannot work; the message says what to change. Raised before any training."""


class NonFiniteLossError(RuntimeError):
  """Training stopped on a NaN or Inf loss; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; replicated on every device and saved whole in checkpoints."""
  step: jax.Array  # Optimiser updates done (int32); also the number of training batches consumed.
  params: Any
  batch_stats: Any  # BatchNorm running averages ({} for norm='affine').
  opt_state: Any
  rng: jax.Array  # uint32 key data; step s uses fold_in(rng, s), so resuming replays the same dropout.


def _input_key(batch: dict) -> str:
  return 'clips' if 'clips' in batch else 'image'


def _dummy_input(config) -> np.ndarray:
  d = config.data
  if config.model.name == 'resnet_image':
    return np.zeros((1, d.crop_size, d.crop_size, 3), np.float32)
  return np.zeros((1, d.num_frames, d.crop_size, d.crop_size, 3), np.float32)


def create_train_state(config, model, tx) -> Callable[[], TrainState]:
  """A function that builds the initial state (call it under jit with replicated output shardings)."""
  def init() -> TrainState:
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng, step_rng = jax.random.split(rng, 3)
    variables = model.init({'params': init_rng, 'dropout': dropout_rng}, jnp.asarray(_dummy_input(config)),
                           train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params), rng=step_rng)
  return init


def _topk_correct(logits, labels, k):
  k = min(k, logits.shape[-1])
  top = lax.top_k(logits, k)[1]
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model, tx, schedule,
               accumulation_steps: int = 1) -> tuple[TrainState, dict]:
  """One update on this device's share of the batch; call it under ``shard_map`` over the 'batch' axis.

  The share is split into ``accumulation_steps`` micro-batches, whose gradients are averaged (each micro-batch
  normalises with its own BatchNorm statistics, like one GPU of the paper), then averaged over devices.
  Returns the new state and the device-averaged metrics loss, top1, top5, grad_norm, learning_rate.
  """
  key = _input_key(batch)
  n = accumulation_steps
  micro = jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
  has_stats = bool(jax.tree.leaves(state.batch_stats))

  def loss_fn(params, batch_stats, mb, mb_rng):
    variables = {'params': params, **({'batch_stats': batch_stats} if has_stats else {})}
    logits, updates = model.apply(variables, mb[key], train=True, mutable=['batch_stats'] if has_stats else [],
                                  rngs={'dropout': mb_rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, mb['label']).mean()
    return loss, (logits, updates.get('batch_stats', batch_stats) if has_stats else batch_stats)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(carry, inputs):
    grads, batch_stats, sums = carry
    mb, i = inputs
    (loss, (logits, batch_stats)), g = grad_fn(state.params, batch_stats, mb, jax.random.fold_in(rng, i))
    sums = {'loss': sums['loss'] + loss,
            'top1': sums['top1'] + _topk_correct(logits, mb['label'], 1).mean(),
            'top5': sums['top5'] + _topk_correct(logits, mb['label'], 5).mean()}
    return (jax.tree.map(jnp.add, grads, g), batch_stats, sums), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  sums0 = {k: jnp.zeros((), jnp.float32) for k in ('loss', 'top1', 'top5')}
  if n == 1:
    # XLA:CPU runs a scan's body as a while loop without the cross-op optimisations of straight-line code
    # (a step of the synthetic model took 3.5x as long on a 2-core CPU), so the common case calls it once.
    (grads, batch_stats, sums), _ = accumulate((zeros, state.batch_stats, sums0),
                                               (jax.tree.map(lambda x: x[0], micro), 0))
  else:
    (grads, batch_stats, sums), _ = lax.scan(accumulate, (zeros, state.batch_stats, sums0),
                                             (micro, jnp.arange(n)))
  grads = lax.pmean(jax.tree.map(lambda g: g / n, grads), AXIS)
  # Per-device running averages are averaged: linear, so the same as averaging per-device averages at the end.
  batch_stats = lax.pmean(batch_stats, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = lax.pmean({k: v / n for k, v in sums.items()}, AXIS)
  metrics['grad_norm'] = optim.global_norm(grads)
  metrics['learning_rate'] = schedule(state.step)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def eval_step(variables: dict, batch: dict, *, model) -> jax.Array:
  """Class probabilities (B, num_classes) of this device's share; videos through the fully-convolutional test."""
  key = _input_key(batch)
  if key == 'clips':
    return model.apply(variables, batch[key], train=False, fully_convolutional=True)
  return jax.nn.softmax(model.apply(variables, batch[key], train=False), axis=-1)


def _batch_stats_step(variables: dict, batch: dict, *, model) -> Any:
  """The BatchNorm statistics of one batch (``model`` has bn_momentum=0, so running = batch), device-averaged."""
  _, updates = model.apply(variables, batch[_input_key(batch)], train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.PRNGKey(0)})
  return lax.pmean(updates['batch_stats'], AXIS)


class Trainer:
  """The jitted, device-mapped steps of one config on one mesh."""

  def __init__(self, config, mesh, model=None):
    from nonlocal_jax.models import build_model  # pylint: disable=g-import-not-at-top
    self.config = config
    self.mesh = mesh
    self.model = model or build_model(config.model)
    self.global_batch = config.data.global_batch_size
    abstract_params = jax.eval_shape(
        lambda: self.model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                                jnp.asarray(_dummy_input(config)), train=False)['params'])
    self.tx, self.schedule = optim.create_optimizer(config.train, abstract_params, self.global_batch)
    rep = parallel.replicated(mesh)
    self.init_state = jax.jit(create_train_state(config, self.model, self.tx), out_shardings=rep)
    step = functools.partial(train_step, model=self.model, tx=self.tx, schedule=self.schedule,
                             accumulation_steps=config.train.accumulation_steps)

    def per_device_step(state, batch):
      rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))
      return step(state, batch, rng)

    self.train_step = parallel.map_over_devices(per_device_step, mesh, (P(), P(AXIS)), (P(), P()),
                                                donate_argnums=(0,))
    self.eval_step = parallel.map_over_devices(functools.partial(eval_step, model=self.model), mesh,
                                               (P(), P(AXIS)), P(AXIS))
    # Momentum 0 makes the 'running' averages the statistics of the batch just seen (for precise BN).
    stats_model = self.model.clone(bn_momentum=0.0)
    self.stats_step = parallel.map_over_devices(functools.partial(_batch_stats_step, model=stats_model), mesh,
                                                (P(), P(AXIS)), P())

  def variables(self, state: TrainState) -> dict:
    """The model variables of ``state``."""
    return {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats else {})}

  def predict_fn(self, state: TrainState) -> Callable[[dict], np.ndarray]:
    """``batch -> (B, num_classes)`` NumPy probabilities for this process's (padded) batch, as evaluate wants."""
    variables = self.variables(state)
    keep = ('clips', 'image', 'label')

    def predict(batch: dict) -> np.ndarray:
      sharded = parallel.shard_batch({k: v for k, v in batch.items() if k in keep}, self.mesh)
      return parallel.local_rows(self.eval_step(variables, sharded))
    return predict

  def precise_bn(self, state: TrainState, batches: Iterator[dict], num_batches: int) -> TrainState:
    """Replaces the running BatchNorm averages by the mean batch statistics of ``num_batches`` batches."""
    if not state.batch_stats or num_batches <= 0:
      return state
    variables = self.variables(state)
    total = None
    for _ in range(num_batches):
      stats = self.stats_step(variables, parallel.shard_batch(next(batches), self.mesh))
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    return state.replace(batch_stats=jax.tree.map(lambda s: s / num_batches, total))


# --- start-up checks ---------------------------------------------------------------------------------------------

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


def check_data(config) -> None:
  """Raises ConfigError if the dataset is not prepared; generates a missing synthetic one if allowed."""
  from nonlocal_jax.data import builders  # pylint: disable=g-import-not-at-top
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
    from nonlocal_jax.data import prepare  # pylint: disable=g-import-not-at-top
    logging.info('Generating the synthetic dataset %s in %s (no download needed).', name, d.data_dir)
    if d.data_dir:
      paths.expand(d.data_dir).mkdir(parents=True, exist_ok=True)
    prepare.prepare_synthetic(name, d.data_dir or '~/tensorflow_datasets', **dict(d.synthetic.items()))
  _barrier('synthetic_prepared')


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def check_config(config) -> None:
  """Raises ConfigError naming the field when the config cannot train (checked before any work starts)."""
  from nonlocal_jax.data import builders  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.models import build_model  # pylint: disable=g-import-not-at-top
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
  if d.batch_layout != 'flat':
    raise ConfigError("config.data.batch_layout must be 'flat' for training (shard_map splits the batch).")
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
    model.check_input(_dummy_input(config).shape)
  except ValueError as e:
    raise ConfigError(f'{e}'.rstrip('.') + ' (config.model / config.data).') from e
  classes = builders.num_classes(d)
  if classes != config.model.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes} but dataset {d.name!r} has {classes} '
                      f'classes: set --config.model.num_classes={classes}.')
  if t.init_checkpoint and not _is_dir(t.init_checkpoint):
    raise ConfigError(f'config.train.init_checkpoint={t.init_checkpoint} is not a directory: give the workdir '
                      'of a finished run.')


def _is_dir(path: str) -> bool:
  try:
    return paths.expand(path).is_dir()
  except ValueError:  # A scheme epath does not know: no directory there that this run could read.
    return False


def startup(config, workdir: str):
  """Multi-host initialisation and every start-up check; returns the mesh. Raises ConfigError."""
  parallel.initialize_distributed(config.get('multihost'))
  check_workdir(workdir)
  check_data(config)
  check_config(config)
  return parallel.make_mesh()


# --- the loop ----------------------------------------------------------------------------------------------------

def _format_seconds(s: float) -> str:
  s = int(max(s, 0))
  return f'{s // 3600}h{s // 60 % 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def _save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    (paths.as_path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def _init_from_checkpoint(state: TrainState, path: str, mesh) -> TrainState:
  loaded = ckpt_lib.load_variables(path)
  params, report = ckpt_lib.merge_matching(jax.device_get(state.params), loaded['params'])
  ckpt_lib.log_report(report, 'params')
  batch_stats = state.batch_stats
  if state.batch_stats:
    batch_stats, stats_report = ckpt_lib.merge_matching(jax.device_get(state.batch_stats), loaded['batch_stats'])
    ckpt_lib.log_report(stats_report, 'batch_stats')
  params, batch_stats = parallel.replicate((params, batch_stats), mesh)
  return state.replace(params=params, batch_stats=batch_stats)


def _check_finite(metrics: dict, step: int, manager, workdir: str) -> None:
  loss = float(metrics['loss'])
  if math.isfinite(loss):
    return
  manager.wait_until_finished()
  last = manager.latest_step()
  kept = (f'the last good checkpoint (step {last}) is kept in {ckpt_lib.checkpoint_dir(workdir)}' if last is not None
          else 'no checkpoint had been written yet')
  raise NonFiniteLossError(f'Training stopped: the loss became {loss} at step {step}; {kept}. Lower '
                           'config.train.base_learning_rate or add train.warmup_steps, then rerun.')


def _evaluate(trainer: Trainer, state: TrainState, config, mode: str):
  from nonlocal_jax import evaluate  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import eval_pipeline  # pylint: disable=g-import-not-at-top
  dataset = eval_pipeline.create_eval_dataset(config.data, mode=mode)
  return evaluate.evaluate(trainer.predict_fn(state), dataset, num_classes=config.model.num_classes)


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint), then evaluates; returns the state.

  Raises ConfigError before any work when the config, the data or the workdir cannot work, and
  NonFiniteLossError when the loss becomes NaN/Inf (the last good checkpoint stays).
  """
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import train_pipeline  # pylint: disable=g-import-not-at-top
  mesh = startup(config, workdir)
  t = config.train
  _save_config(config, workdir)
  trainer = Trainer(config, mesh)
  state = trainer.init_state()
  manager = ckpt_lib.create_manager(workdir, keep=t.keep_checkpoints, asynchronous=t.async_checkpoints)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if manager.latest_step() is not None:
    state, meta = ckpt_lib.restore(manager, state)
    logging.info('Resuming from step %d in %s (data position: %d batches).', meta['step'],
                 ckpt_lib.checkpoint_dir(workdir), meta['batches_consumed'])
  elif t.init_checkpoint:
    state = _init_from_checkpoint(state, t.init_checkpoint, mesh)
  start = int(jax.device_get(state.step))
  if start == 0:
    logging.info('Training %s: %d parameters on %d devices (%d processes).', config.model.name,
                 sum(x.size for x in jax.tree.leaves(state.params)), jax.device_count(), jax.process_count())

  if start < t.num_steps:
    batches = train_pipeline.create_train_iterator(config.data, seed=config.seed, start_batch=start)
    pending = None  # Metrics of the step before: checked one step late so that the device stays busy.
    window_start, window_steps, window_sums = time.time(), 0, {}
    for step in range(start + 1, t.num_steps + 1):
      batch = parallel.shard_batch(next(batches), mesh)
      state, metrics = trainer.train_step(state, batch)
      if pending is not None:
        _check_finite(pending, step - 1, manager, workdir)
      pending = metrics
      window_steps += 1
      for k, v in metrics.items():
        window_sums[k] = window_sums.get(k, 0.0) + v
      if step % t.log_every_steps == 0 or step == t.num_steps:
        _check_finite(metrics, step, manager, workdir)
        means = {k: float(v) / window_steps for k, v in window_sums.items()}
        means['learning_rate'] = float(metrics['learning_rate'])
        elapsed = time.time() - window_start
        means['step_time_s'] = elapsed / window_steps
        means['clips_per_s'] = window_steps * trainer.global_batch / max(elapsed, 1e-9)
        writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})
        eta = means['step_time_s'] * (t.num_steps - step)
        logging.info('step %d/%d (%.0f%%) loss %.4f top1 %.3f top5 %.3f lr %.3g | %.1f clips/s %.3f s/step '
                     'ETA %s', step, t.num_steps, 100 * step / t.num_steps, means['loss'], means['top1'],
                     means['top5'], means['learning_rate'], means['clips_per_s'], means['step_time_s'],
                     _format_seconds(eta))
        window_start, window_steps, window_sums = time.time(), 0, {}
      if t.eval_every_steps and step % t.eval_every_steps == 0 and step < t.num_steps:
        result = _evaluate(trainer, state, config, 'val')
        writer.write_scalars(step, {f'val/{k}': v for k, v in result.metrics.items()})
        logging.info('step %d validation: %s', step, _describe(result.metrics))
      if step % t.checkpoint_every_steps == 0 and step < t.num_steps:
        _check_finite(metrics, step, manager, workdir)
        ckpt_lib.save(manager, state, batches_consumed=step)
    _check_finite(pending, t.num_steps, manager, workdir)
    if t.precise_bn_batches > 0 and state.batch_stats:
      logging.info('Precise BN: re-estimating BatchNorm statistics over %d batches.', t.precise_bn_batches)
      stats_batches = train_pipeline.create_train_iterator(config.data, seed=config.seed + 1)
      state = trainer.precise_bn(state, stats_batches, t.precise_bn_batches)
    ckpt_lib.save(manager, state, batches_consumed=t.num_steps)
  manager.wait_until_finished()
  writer.flush()

  if t.eval_at_end:
    result = _evaluate(trainer, state, config, 'test')
    _save_eval(result, workdir, t.num_steps)
    writer.write_scalars(t.num_steps, {f'test/{k}': v for k, v in result.metrics.items()})
    writer.flush()
    logging.info('Test (multi-view) at step %d: %s', t.num_steps, _describe(result.metrics))
  manager.close()
  return state


def _describe(metrics: dict) -> str:
  return ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in sorted(metrics.items()))


def _save_eval(result, workdir: str, step: int) -> None:
  from nonlocal_jax import evaluate  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    evaluate.save_results(result, paths.as_path(workdir) / 'eval', f'test_step{step}')


def evaluate_checkpoint(config, workdir: str):
  """The multi-view test of the checkpoint ``config.eval_step`` (None: the latest) in ``workdir``; saves results."""
  mesh = startup(config, workdir)
  trainer = Trainer(config, mesh)
  state = trainer.init_state()
  manager = ckpt_lib.create_manager(workdir, asynchronous=False)
  step = config.get('eval_step')
  if manager.latest_step() is None:
    raise ConfigError(f'There is no checkpoint in {ckpt_lib.checkpoint_dir(workdir)}: train first (--mode=train).')
  if step is not None and step not in manager.all_steps():
    raise ConfigError(f'config.eval_step={step} has no checkpoint in {ckpt_lib.checkpoint_dir(workdir)}: use one of '
                      f'{sorted(manager.all_steps())}.')
  state, meta = ckpt_lib.restore(manager, state, step)
  manager.close()
  result = _evaluate(trainer, state, config, 'test')
  _save_eval(result, workdir, meta['step'])
  logging.info('Test (multi-view) of the step %d checkpoint: %s', meta['step'], _describe(result.metrics))
  return result


def params_digest(state: TrainState) -> dict:
  """Per-parameter float64 sums (for comparing runs in tests and logs)."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(state.params), sep='/')
  return {k: float(np.sum(np.asarray(v, np.float64))) for k, v in flat.items()}


__all__ = ['ConfigError', 'NonFiniteLossError', 'TrainState', 'Trainer', 'check_config', 'check_workdir',
           'evaluate_checkpoint', 'eval_step', 'train_and_evaluate', 'train_step']
