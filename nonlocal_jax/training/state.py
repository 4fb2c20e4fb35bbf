"""The training state: what a step changes, replicated on every device and saved whole in checkpoints."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; replicated on every device and saved whole in checkpoints."""
  step: jax.Array  # Optimiser updates done (int32); also the number of training batches consumed.
  params: Any
  batch_stats: Any  # BatchNorm running averages ({} for norm='affine').
  opt_state: Any
  rng: jax.Array  # uint32 key data; step s uses fold_in(rng, s), so resuming replays the same dropout.


def dummy_input(config) -> np.ndarray:
  """A zero batch of one example in the input shape of ``config`` (clips or images), for init and shape checks."""
  d = config.data
  if config.model.name == 'resnet_image':
    return np.zeros((1, d.crop_size, d.crop_size, 3), np.float32)
  return np.zeros((1, d.num_frames, d.crop_size, d.crop_size, 3), np.float32)


def create_train_state(config, model, tx) -> Callable[[], TrainState]:
  """A function that builds the initial state (call it under jit with replicated output shardings)."""
  def init() -> TrainState:
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng, step_rng = jax.random.split(rng, 3)
    variables = model.init({'params': init_rng, 'dropout': dropout_rng}, jnp.asarray(dummy_input(config)),
                           train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params), rng=step_rng)
  return init
