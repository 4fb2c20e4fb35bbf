"""The training loop: ``train_and_evaluate(config, workdir)`` (main.py, notebooks and the sweep call it) and
``evaluate_checkpoint``, the multi-view test of a saved checkpoint.

A run resumes from the latest checkpoint in ``workdir``, with the data stream at the same position, so an
interrupted run ends with the same parameters as an uninterrupted one. The console gets the start-up facts, one
progress line every ``train.log_every_steps``, one line per checkpoint and the result (``nonlocal_jax.console``).
A run stops at the first step whose values are not finite (``_Guard``: the step's flag, read where the host reads
anyway), so every checkpoint it writes is finite; resuming and evaluating refuse one that is not.
"""

from __future__ import annotations

import collections
import time

import jax
import numpy as np

from nonlocal_jax import console
from nonlocal_jax import evaluation
from nonlocal_jax import paths
from nonlocal_jax.data import fake
# The pipeline modules import TensorFlow when first used: a fake-data run (a GPU host without it) never does.
from nonlocal_jax.data.entry import builders, eval_pipeline, train_pipeline
from nonlocal_jax.training import checkpoint as ckpt_lib
from nonlocal_jax.training import metric_writer
from nonlocal_jax.training import parallel
from nonlocal_jax.training import steps
from nonlocal_jax.training import tree_reductions
from nonlocal_jax.training.checks import startup
from nonlocal_jax.training.errors import ConfigError
from nonlocal_jax.training.state import TrainState
from nonlocal_jax.training.trainer import Trainer


class NonFiniteLossError(RuntimeError):
  """Training stopped on a NaN or Inf (loss, gradient norm, parameters, BatchNorm statistics or optimiser state),
  or a checkpoint to resume or evaluate holds one; the message names what, where, and what to change."""


_all_finite = jax.jit(tree_reductions.all_finite)

# How many steps the host may queue before it waits (reading nothing) for one to finish: as many batches are
# held on the device at once, however rarely the host reads the metrics.
_STEPS_AHEAD = 2
# How many batches beyond the one a step takes are already on the devices: their host-to-device copies run
# while the step runs, so a step never waits on one.
_PREFETCH_DEPTH = 2


class _Guard:
  """The 'nonfinite' flags of the steps since the last read; read at once where the loop reads anyway."""

  def __init__(self):
    self._flags = []  # (step, device scalar), oldest first.

  def add(self, step: int, flag) -> None:
    """Keeps ``step``'s flag; waits for the step ``_STEPS_AHEAD`` before it to finish (no transfer)."""
    self._flags.append((step, flag))
    if len(self._flags) > _STEPS_AHEAD:
      jax.block_until_ready(self._flags[-_STEPS_AHEAD - 1][1])

  def check(self, manager, workdir: str) -> None:
    """Reads the flags kept (one transfer) and raises NonFiniteLossError at the first step that flagged a value."""
    flags, self._flags = self._flags, []
    for (step, _), code in zip(flags, jax.device_get([f for _, f in flags])):
      if code:
        raise _diverged(steps.nonfinite_names(code), f'at step {step}', manager, workdir)


def _join(names: list[str]) -> str:
  """'a', 'a and b', 'a, b and c'."""
  return names[0] if len(names) == 1 else ', '.join(names[:-1]) + ' and ' + names[-1]


def _diverged(names: list[str], when: str, manager, workdir: str, *, of_a_step: bool = True) -> NonFiniteLossError:
  """The error of a run whose ``names`` (NONFINITE_PARTS) became non-finite ``when``; says where a rerun starts.

  ``of_a_step``: ``names`` come from a training step's flag, which also checked the loss and gradient norm.
  """
  manager.wait_until_finished()
  last = manager.latest_step()
  finite = [n for n in ('loss', 'gradient norm') if n not in names and of_a_step]
  stayed = f' (the {_join(finite)} stayed finite)' if finite else ''
  # Every checkpoint is saved only once the flags of all steps up to it were read as finite (or, resumed from,
  # found finite): the latest is the one a rerun starts from, and it is finite.
  rerun = (f'a rerun resumes from the latest checkpoint, step {last} in {ckpt_lib.checkpoint_dir(workdir)}, whose '
           'values are all finite' if last is not None else 'no checkpoint had been written, so a rerun starts '
           'from the beginning')
  return NonFiniteLossError(f'Training stopped: the {_join(names)} became NaN or Inf {when}{stayed}; {rerun}; lower '
                            'config.train.base_learning_rate or add config.train.warmup_steps before rerunning.')


def _nonfinite_parts(trees: dict):
  """The names of the ``trees`` ({name: pytree}) holding a NaN or Inf (checked on the device, one read)."""
  flags = jax.device_get({name: _all_finite(tree) for name, tree in trees.items()})
  return [name for name, ok in flags.items() if not ok]


def _stored_parts(state: TrainState) -> dict:
  """What a checkpoint holds that must be finite, by the names of NONFINITE_PARTS."""
  return {'parameters': state.params, 'BatchNorm statistics': state.batch_stats, 'optimiser state': state.opt_state}


def _save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    (paths.as_path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def _init_from_checkpoint(state: TrainState, path: str, mesh) -> TrainState:
  loaded = ckpt_lib.load_variables(path)
  bad = [name for name, tree in (('parameters', loaded['params']), ('BatchNorm statistics', loaded['batch_stats']))
         if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree))]
  if bad:
    raise ConfigError(f'config.train.init_checkpoint={path} holds NaN or Inf {_join(bad)}: give the workdir of a '
                      'run whose weights are finite.')
  params, report = ckpt_lib.merge_matching(jax.device_get(state.params), loaded['params'])
  ckpt_lib.log_report(report, 'params')
  batch_stats = state.batch_stats
  if state.batch_stats:
    batch_stats, stats_report = ckpt_lib.merge_matching(jax.device_get(state.batch_stats), loaded['batch_stats'])
    ckpt_lib.log_report(stats_report, 'batch_stats')
  params, batch_stats = parallel.replicate((params, batch_stats), mesh)
  return state.replace(params=params, batch_stats=batch_stats)


def _evaluate(trainer: Trainer, state: TrainState, config, mode: str):
  dataset = eval_pipeline.create_eval_dataset(config.data, mode=mode)
  builder = builders.prepared_builder(config.data)
  # A multi-label dataset is scored by mAP, its views pooled by max unless the config says otherwise.
  multi_label = builders.dataset_features(builder).multi_label
  pooling = config.data.get('test_view_pooling', 'auto')
  return evaluation.evaluate(trainer.predict_fn(state), dataset, num_classes=config.model.num_classes,
                             class_names=builders.class_names(config.data, builder), multi_label=multi_label,
                             view_pooling=None if pooling == 'auto' else pooling)


def _shows_top5(config) -> bool:
  # With 5 classes or fewer the true class is always among the top 5: a column of 100 % says nothing.
  return config.model.num_classes > 5


def _test_views(config) -> str:
  """What the test averages per video, for people: '10 clips × 3 crops' or '1 view'."""
  d = config.data
  if config.model.name == 'resnet_image' or d.test_num_clips * d.test_num_crops == 1:
    return '1 view'
  return f'{d.test_num_clips} clips × {d.test_num_crops} crops'


def _describe(metrics: dict, config=None) -> str:
  shown = {k: v for k, v in metrics.items() if config is None or _shows_top5(config) or 'top5' not in k}
  return ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in sorted(shown.items()))


def _progress_line(config, step: int, means: dict) -> str:
  num_steps = config.train.num_steps
  if 'hit1' in means:  # Multi-label (steps.batch_metrics).
    accuracy = f'hit@1 {means["hit1"]:.3f}'
  else:
    accuracy = f'top1 {means["top1"]:.3f}' + (f' top5 {means["top5"]:.3f}' if _shows_top5(config) else '')
  eta = means['step_time_s'] * (num_steps - step)
  return (f'step {step}/{num_steps} ({100 * step / num_steps:.0f}%) loss {means["loss"]:.4f} {accuracy} lr '
          f'{means["learning_rate"]:.3g} | {means["clips_per_s"]:.1f} clips/s '
          f'{means["step_time_s"]:.3f} s/step ETA {console.format_duration(eta)}')


def _report_start(config, workdir: str, state: TrainState) -> None:
  d = config.data
  log_file = console.current_log_file()
  logs = f'; library logs in {log_file} (--verbosity=0 shows them here)' if log_file else ''
  console.info('Workdir %s%s.', paths.absolute(workdir), logs)
  if fake.is_fake(d):
    console.info('Fake data: random %s inputs and labels of %d classes generated on the devices, %d clips per step '
                 '(no dataset is read; training throughput only).', '×'.join(map(str, _input_shape(config))),
                 config.model.num_classes, d.global_batch_size)
  else:
    console.info('Dataset %s (%d classes) in %s: %d clips per step, testing on %r with %s.', d.name,
                 config.model.num_classes, d.data_dir or '~/tensorflow_datasets', d.global_batch_size, d.eval_split,
                 _test_views(config))
  if config.get('compilation_cache_dir'):
    console.info('Compiled programs are cached in %s: a rerun with the same shapes loads them.',
                 config.compilation_cache_dir)
  console.info('Training %s: %d parameters on %d devices (%d processes).', config.model.name,
               sum(x.size for x in jax.tree.leaves(state.params)), jax.device_count(), jax.process_count())


def _input_kind(config) -> str:
  return 'image' if config.model.name == 'resnet_image' else 'video'


def _input_shape(config) -> tuple[int, ...]:
  return fake.example_shape(config.data, _input_kind(config))


def _train_batches(config, mesh, *, seed: int, start_batch: int = 0):
  """Global training batches on the mesh from ``start_batch`` on: the pipeline's, sharded and prefetched to the
  devices, or fake ones (generated there)."""
  if fake.is_fake(config.data):
    return fake.train_iterator(config.data, seed=seed, kind=_input_kind(config),
                               num_classes=config.model.num_classes, sharding=parallel.batch_sharded(mesh),
                               start_batch=start_batch)
  batches = train_pipeline.create_train_iterator(config.data, seed=seed, start_batch=start_batch)
  return _prefetch_to_devices(batches, mesh)


def _prefetch_to_devices(batches, mesh, depth: int = _PREFETCH_DEPTH):
  """``batches`` sharded over ``mesh``, in order, with ``depth`` more already copied (asynchronously) to the
  devices: while step s runs, batches s+1 .. s+depth are on their way. The stream's content is unchanged."""
  queue = collections.deque()
  for batch in batches:
    queue.append(parallel.shard_batch(batch, mesh))
    if len(queue) > depth:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint), then evaluates; returns the state.

  Raises ConfigError before any work when the config, the data or the workdir cannot work, and
  NonFiniteLossError at the first step whose loss, gradient norm, parameters, BatchNorm statistics or optimiser
  state hold a NaN or Inf: each step flags them on the device; the flags are read at logging steps, before each
  checkpoint and at the end, so no checkpoint holding one is written and the host reads nothing in between.
  """
  mesh = startup(config, workdir)
  t = config.train
  _save_config(config, workdir)
  trainer = Trainer(config, mesh)
  state = trainer.init_state()
  manager = ckpt_lib.create_manager(workdir, keep=t.keep_checkpoints, asynchronous=t.async_checkpoints)
  writer = metric_writer.create(workdir, just_logging=jax.process_index() > 0)
  _report_start(config, workdir, state)
  if manager.latest_step() is not None:
    state, meta = ckpt_lib.restore(manager, state)
    bad = _nonfinite_parts(_stored_parts(state))
    if bad:  # Written before the run stopped on them: resuming would fail again at once.
      raise NonFiniteLossError(f'The latest checkpoint, step {meta["step"]} in {ckpt_lib.checkpoint_dir(workdir)}, '
                               f'holds NaN or Inf {_join(bad)}: move its directory away so that a rerun resumes '
                               'from the one before, and lower config.train.base_learning_rate.')
    console.info('Resuming from step %d in %s (data position: %d batches).', meta['step'],
                 ckpt_lib.checkpoint_dir(workdir), meta['batches_consumed'])
  elif t.init_checkpoint:
    state = _init_from_checkpoint(state, t.init_checkpoint, mesh)
  start = int(jax.device_get(state.step))

  # Fake labels are random: their accuracy says nothing, so a fake run measures training only.
  evaluates = not fake.is_fake(config.data)
  if start < t.num_steps:
    batches = _train_batches(config, mesh, seed=config.seed, start_batch=start)
    guard = _Guard()
    window_start, window_steps, window_sums = time.time(), 0, {}
    for step in range(start + 1, t.num_steps + 1):
      state, metrics = trainer.train_step(state, next(batches))
      guard.add(step, metrics.pop('nonfinite'))
      window_steps += 1
      for k, v in metrics.items():
        window_sums[k] = window_sums.get(k, 0.0) + v
      if step % t.log_every_steps == 0 or step == t.num_steps:
        guard.check(manager, workdir)
        means = {k: float(v) / window_steps for k, v in window_sums.items()}
        means['learning_rate'] = float(metrics['learning_rate'])
        elapsed = time.time() - window_start
        means['step_time_s'] = elapsed / window_steps
        means['clips_per_s'] = window_steps * trainer.global_batch / max(elapsed, 1e-9)
        writer.write_scalars(step, {f'train/{k}': v for k, v in means.items()})
        console.info('%s', _progress_line(config, step, means))
        window_start, window_steps, window_sums = time.time(), 0, {}
      if evaluates and t.eval_every_steps and step % t.eval_every_steps == 0 and step < t.num_steps:
        result = _evaluate(trainer, state, config, 'val')
        writer.write_scalars(step, {f'val/{k}': v for k, v in result.metrics.items()})
        console.info('step %d validation: %s', step, _describe(result.metrics, config))
      if step % t.checkpoint_every_steps == 0 and step < t.num_steps:
        guard.check(manager, workdir)
        ckpt_lib.save(manager, state, batches_consumed=step)
        console.info('Checkpoint of step %d: %s', step, ckpt_lib.checkpoint_dir(workdir))
    guard.check(manager, workdir)
    if t.precise_bn_batches > 0 and state.batch_stats:
      console.info('Precise BN: re-estimating BatchNorm statistics over %d batches.', t.precise_bn_batches)
      stats_batches = _train_batches(config, mesh, seed=config.seed + 1)
      state = trainer.precise_bn(state, stats_batches, t.precise_bn_batches)
      if _nonfinite_parts({'BatchNorm statistics': state.batch_stats}):
        raise _diverged(['BatchNorm statistics'], f'in precise BN after step {t.num_steps}', manager, workdir,
                        of_a_step=False)
    ckpt_lib.save(manager, state, batches_consumed=t.num_steps)
    console.info('Checkpoint of step %d: %s', t.num_steps, ckpt_lib.checkpoint_dir(workdir))
  manager.wait_until_finished()
  writer.flush()

  if t.eval_at_end and not evaluates:
    console.info('No evaluation: config.data.name=%r has random labels (the run measured training throughput).',
                 fake.NAME)
  elif t.eval_at_end:
    result = _evaluate(trainer, state, config, 'test')
    _save_eval(result, workdir, t.num_steps)
    writer.write_scalars(t.num_steps, {f'test/{k}': v for k, v in result.metrics.items()})
    writer.flush()
    console.info('Test (%s) at step %d: %s', _test_views(config), t.num_steps, _describe(result.metrics, config))
  manager.close()
  return state


def _save_eval(result, workdir: str, step: int) -> None:
  if jax.process_index() == 0:
    evaluation.save_results(result, paths.as_path(workdir) / 'eval', f'test_step{step}')


def evaluate_checkpoint(config, workdir: str):
  """The multi-view test of the checkpoint ``config.eval_step`` (None: the latest) in ``workdir``; saves results.

  Raises ConfigError, creating nothing, when ``workdir`` does not exist or holds no checkpoint, and
  NonFiniteLossError when the checkpoint's parameters or BatchNorm statistics hold a NaN or Inf.
  """
  mesh = startup(config, workdir, evaluate=True)
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
  available = sorted(manager.all_steps())
  manager.close()
  bad = _nonfinite_parts({'parameters': state.params, 'BatchNorm statistics': state.batch_stats})
  if bad:
    raise NonFiniteLossError(f'The checkpoint of step {meta["step"]} in {ckpt_lib.checkpoint_dir(workdir)} holds NaN '
                             f'or Inf {_join(bad)}: evaluate another with --config.eval_step (one of {available}) '
                             'or retrain with a lower config.train.base_learning_rate.')
  result = _evaluate(trainer, state, config, 'test')
  _save_eval(result, workdir, meta['step'])
  console.info('Test (%s) of the step %d checkpoint: %s', _test_views(config), meta['step'],
               _describe(result.metrics, config))
  return result
