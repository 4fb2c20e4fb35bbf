"""The training loop: ``train_and_evaluate(config, workdir)`` (main.py, notebooks and the sweep call it) and
``evaluate_checkpoint``, the multi-view test of a saved checkpoint.

A run resumes from the latest checkpoint in ``workdir``, with the data stream at the same position, so an
interrupted run ends with the same parameters as an uninterrupted one. The console gets the start-up facts, one
progress line every ``train.log_every_steps``, one line per checkpoint and the result (``nonlocal_jax.console``).
"""

from __future__ import annotations

import math
import time

import jax
from clu import metric_writers

from nonlocal_jax import console
from nonlocal_jax import evaluation
from nonlocal_jax import paths
from nonlocal_jax.data import builders, eval_pipeline, train_pipeline
from nonlocal_jax.training import checkpoint as ckpt_lib
from nonlocal_jax.training import parallel
from nonlocal_jax.training.checks import ConfigError, startup
from nonlocal_jax.training.state import TrainState
from nonlocal_jax.training.trainer import Trainer


class NonFiniteLossError(RuntimeError):
  """Training stopped on a NaN or Inf loss; the last good checkpoint is kept."""


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
  dataset = eval_pipeline.create_eval_dataset(config.data, mode=mode)
  return evaluation.evaluate(trainer.predict_fn(state), dataset, num_classes=config.model.num_classes,
                             class_names=builders.class_names(config.data))


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
  top5 = f' top5 {means["top5"]:.3f}' if _shows_top5(config) else ''
  eta = means['step_time_s'] * (num_steps - step)
  return (f'step {step}/{num_steps} ({100 * step / num_steps:.0f}%) loss {means["loss"]:.4f} top1 '
          f'{means["top1"]:.3f}{top5} lr {means["learning_rate"]:.3g} | {means["clips_per_s"]:.1f} clips/s '
          f'{means["step_time_s"]:.3f} s/step ETA {console.format_duration(eta)}')


def _report_start(config, workdir: str, state: TrainState) -> None:
  d = config.data
  log_file = console.current_log_file()
  logs = f'; library logs in {log_file} (--verbosity=0 shows them here)' if log_file else ''
  console.info('Workdir %s%s.', paths.absolute(workdir), logs)
  console.info('Dataset %s (%d classes) in %s: %d clips per step, testing on %r with %s.', d.name,
               config.model.num_classes, d.data_dir or '~/tensorflow_datasets', d.global_batch_size, d.eval_split,
               _test_views(config))
  console.info('Training %s: %d parameters on %d devices (%d processes).', config.model.name,
               sum(x.size for x in jax.tree.leaves(state.params)), jax.device_count(), jax.process_count())


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint), then evaluates; returns the state.

  Raises ConfigError before any work when the config, the data or the workdir cannot work, and
  NonFiniteLossError when the loss becomes NaN/Inf (the last good checkpoint stays).
  """
  mesh = startup(config, workdir)
  t = config.train
  _save_config(config, workdir)
  trainer = Trainer(config, mesh)
  state = trainer.init_state()
  manager = ckpt_lib.create_manager(workdir, keep=t.keep_checkpoints, asynchronous=t.async_checkpoints)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  _report_start(config, workdir, state)
  if manager.latest_step() is not None:
    state, meta = ckpt_lib.restore(manager, state)
    console.info('Resuming from step %d in %s (data position: %d batches).', meta['step'],
                 ckpt_lib.checkpoint_dir(workdir), meta['batches_consumed'])
  elif t.init_checkpoint:
    state = _init_from_checkpoint(state, t.init_checkpoint, mesh)
  start = int(jax.device_get(state.step))

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
        console.info('%s', _progress_line(config, step, means))
        window_start, window_steps, window_sums = time.time(), 0, {}
      if t.eval_every_steps and step % t.eval_every_steps == 0 and step < t.num_steps:
        result = _evaluate(trainer, state, config, 'val')
        writer.write_scalars(step, {f'val/{k}': v for k, v in result.metrics.items()})
        console.info('step %d validation: %s', step, _describe(result.metrics, config))
      if step % t.checkpoint_every_steps == 0 and step < t.num_steps:
        _check_finite(metrics, step, manager, workdir)
        ckpt_lib.save(manager, state, batches_consumed=step)
        console.info('Checkpoint of step %d: %s', step, ckpt_lib.checkpoint_dir(workdir))
    _check_finite(pending, t.num_steps, manager, workdir)
    if t.precise_bn_batches > 0 and state.batch_stats:
      console.info('Precise BN: re-estimating BatchNorm statistics over %d batches.', t.precise_bn_batches)
      stats_batches = train_pipeline.create_train_iterator(config.data, seed=config.seed + 1)
      state = trainer.precise_bn(state, stats_batches, t.precise_bn_batches)
    ckpt_lib.save(manager, state, batches_consumed=t.num_steps)
    console.info('Checkpoint of step %d: %s', t.num_steps, ckpt_lib.checkpoint_dir(workdir))
  manager.wait_until_finished()
  writer.flush()

  if t.eval_at_end:
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
  console.info('Test (%s) of the step %d checkpoint: %s', _test_views(config), meta['step'],
               _describe(result.metrics, config))
  return result
