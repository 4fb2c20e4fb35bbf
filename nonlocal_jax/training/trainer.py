"""The Trainer: the jitted, device-mapped steps of one config on one mesh, and what is built from them."""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nonlocal_jax.data import device_input
from nonlocal_jax.models import build_model
from nonlocal_jax.training import optim
from nonlocal_jax.training import parallel
from nonlocal_jax.training import steps
from nonlocal_jax.training.parallel import AXIS, P
from nonlocal_jax.training.state import TrainState, create_train_state, dummy_input


class Trainer:
  """The jitted, device-mapped steps of one config on one mesh."""

  def __init__(self, config, mesh, model=None):
    self.config = config
    self.mesh = mesh
    self.model = model or build_model(config.model)
    self.global_batch = config.data.global_batch_size
    abstract_params = jax.eval_shape(
        lambda: self.model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                                jnp.asarray(dummy_input(config)), train=False)['params'])
    self.tx, self.schedule = optim.create_optimizer(config.train, abstract_params, self.global_batch)
    rep = parallel.replicated(mesh)
    self.init_state = jax.jit(create_train_state(config, self.model, self.tx), out_shardings=rep)
    network_input = device_input.network_input(config.data)
    step = functools.partial(steps.train_step, model=self.model, tx=self.tx, schedule=self.schedule,
                             accumulation_steps=config.train.accumulation_steps, network_input=network_input)

    def per_device_step(state, batch):
      rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))
      return step(state, batch, rng)

    self.train_step = parallel.map_over_devices(per_device_step, mesh, (P(), P(AXIS)), (P(), P()),
                                                donate_argnums=(0,))
    self.eval_step = parallel.map_over_devices(functools.partial(steps.eval_step, model=self.model,
                                                                 network_input=network_input), mesh,
                                               (P(), P(AXIS)), P(AXIS))
    # Momentum 0 makes the 'running' averages the statistics of the batch just seen (for precise BN).
    stats_model = self.model.clone(bn_momentum=0.0)
    self.stats_step = parallel.map_over_devices(functools.partial(steps.batch_stats_step, model=stats_model,
                                                                  network_input=network_input), mesh,
                                                (P(), P(AXIS)), P())

  def variables(self, state: TrainState) -> dict:
    """The model variables of ``state``."""
    return {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats else {})}

  def predict_fn(self, state: TrainState) -> Callable[[dict], np.ndarray]:
    """``batch -> (B, num_classes)`` NumPy probabilities for this process's (padded) batch, as evaluate wants."""
    variables = self.variables(state)
    keep = ('clips', 'image', 'view_side', 'view_flip', 'label')

    def predict(batch: dict) -> np.ndarray:
      sharded = parallel.shard_batch({k: v for k, v in batch.items() if k in keep}, self.mesh)
      return parallel.local_rows(self.eval_step(variables, sharded))
    return predict

  def on_mesh(self, batch: dict) -> dict:
    """``batch`` as global arrays on the mesh: a host (NumPy) batch is sharded; one already on it is kept."""
    if all(isinstance(x, jax.Array) for x in jax.tree.leaves(batch)):
      return batch  # Fake data (nonlocal_jax.data.fake) is generated on the mesh.
    return parallel.shard_batch(batch, self.mesh)

  def precise_bn(self, state: TrainState, batches: Iterator[dict], num_batches: int) -> TrainState:
    """Replaces the running BatchNorm averages by the mean batch statistics of ``num_batches`` batches (this
    process's host batches, or global batches already on the mesh)."""
    if not state.batch_stats or num_batches <= 0:
      return state
    variables = self.variables(state)
    total = None
    for _ in range(num_batches):
      stats = self.stats_step(variables, self.on_mesh(next(batches)))
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    return state.replace(batch_stats=jax.tree.map(lambda s: s / num_batches, total))
