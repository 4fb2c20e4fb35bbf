"""Training: the pure steps, the loop, start-up checks, checkpoints, the optimiser and data parallelism.

The steps are written for one device and mapped over a 1-D mesh with ``jax.shard_map`` (``parallel``): gradients
and metrics are averaged over the ``'batch'`` axis; BatchNorm uses each device's share of the batch (as the paper:
8 clips per GPU) unless ``config.model.bn_axis_name='batch'`` synchronises it, and its running averages are
averaged over devices after each step so that the state stays replicated.

    state.py       TrainState, create_train_state
    steps.py       train_step, eval_step, batch_stats_step (pure, one device's share)
    trainer.py     Trainer: the jitted, device-mapped steps of a config on a mesh
    errors.py      ConfigError (one sentence, no traceback)
    checks.py      the start-up checks (workdir, checkpoints, data, config), startup
    loop.py        train_and_evaluate, evaluate_checkpoint, NonFiniteLossError
    checkpoint.py  orbax checkpoints that verify what they restore (falling back past damage), init_checkpoint
    checkpoint_digest.py  the digest written with each checkpoint and checked on restore
    metric_writer.py  the loop's scalars: clu's writer, or TensorBoard's own where TensorFlow is absent
    optim.py       schedule, optimiser, parameter groups
    parallel.py    the mesh, batch sharding, map_over_devices
"""

from nonlocal_jax.training.checks import (check_checkpoints, check_config, check_data, check_evaluable,
                                         check_workdir, startup)
from nonlocal_jax.training.errors import ConfigError
from nonlocal_jax.training.loop import NonFiniteLossError, evaluate_checkpoint, train_and_evaluate
from nonlocal_jax.training.state import TrainState, create_train_state
from nonlocal_jax.training.steps import eval_step, train_step
from nonlocal_jax.training.trainer import Trainer

__all__ = ['ConfigError', 'NonFiniteLossError', 'TrainState', 'Trainer', 'check_checkpoints', 'check_config',
           'check_data', 'check_evaluable', 'check_workdir', 'create_train_state', 'eval_step',
           'evaluate_checkpoint', 'startup', 'train_and_evaluate', 'train_step']
