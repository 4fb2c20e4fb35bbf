"""The optimiser of the paper's recipe with optax: schedule, SGD + Nesterov momentum, masked weight decay.

Parameter groups are chosen by regexes over '/'-joined parameter paths (``res3_0/branch2a_bn/scale``), big_vision
style: ``train.weight_decay_include/exclude``, ``train.lr_multipliers`` and ``train.freeze``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax
import jax
import optax


def path_names(params: Any) -> Any:
  """A pytree like ``params`` holding each leaf's '/'-joined path."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  return flax.traverse_util.unflatten_dict({k: k for k in flat}, sep='/')


def _tree_of(params: Any, fn: Callable[[str], Any]) -> Any:
  return jax.tree.map(fn, path_names(params))


def learning_rate_schedule(train_config: Any, global_batch_size: int) -> optax.Schedule:
  """The learning rate per update: base rate × batch / base batch (linear scaling), schedule, warm-up."""
  c = train_config
  peak = c.base_learning_rate * global_batch_size / c.base_batch_size
  decay_steps = max(c.num_steps - c.warmup_steps, 1)
  if c.schedule == 'step':
    main = optax.piecewise_constant_schedule(
        peak, {int(b) - c.warmup_steps: c.step_factor for b in c.step_boundaries if b > c.warmup_steps})
  elif c.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, decay_steps)
  else:  # 'constant': the only other value config.train.schedule's declared range allows.
    main = optax.constant_schedule(peak)
  if c.warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, peak, c.warmup_steps)
  return optax.join_schedules([warmup, main], [c.warmup_steps])


def _first_match(patterns, name, default):
  for pattern, value in patterns:
    if re.fullmatch(pattern, name):
      return value
  return default


def weight_decay_mask(train_config: Any, params: Any) -> Any:
  """True for the parameters that get weight decay: include matches, exclude and freeze do not."""
  c = train_config
  def decayed(name):
    if c.freeze and re.fullmatch(c.freeze, name):
      return False
    return bool(re.fullmatch(c.weight_decay_include, name)) and not (
        c.weight_decay_exclude and re.fullmatch(c.weight_decay_exclude, name))
  return _tree_of(params, decayed)


def create_optimizer(train_config: Any, params: Any, global_batch_size: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimiser, learning-rate schedule) of ``config.train`` for ``params``.

  With ``optimizer='sgd'`` (the paper) updates are ``-lr · mult · momentum_nesterov(g + wd · w)``: decay is added
  to the gradient before momentum, as Caffe2's SGD with weight decay does. ``'adamw'`` (not in the paper; for small
  problems whose loss starts on a plateau, where Adam's per-parameter normalisation escapes much sooner) uses
  ``-lr · mult · (adam(g) + wd · w)`` with decoupled decay, β = (``momentum``, 0.999).
  """
  c = train_config
  optimizer = c.get('optimizer', 'sgd')  # 'sgd' or 'adamw': the range declared in configs/default.py.
  schedule = learning_rate_schedule(c, global_batch_size)
  multipliers = tuple((p, float(m)) for p, m in c.lr_multipliers)
  scale = _tree_of(params, lambda n: _first_match(multipliers, n, 1.0))
  decay = optax.add_decayed_weights(c.weight_decay, mask=weight_decay_mask(c, params))
  if optimizer == 'sgd':
    direction = optax.chain(decay, optax.trace(decay=c.momentum, nesterov=c.nesterov))
  else:
    direction = optax.chain(optax.scale_by_adam(b1=c.momentum, b2=0.999, nesterov=c.nesterov), decay)
  tx = optax.chain(direction, optax.scale_by_schedule(lambda step: -schedule(step)))
  if c.freeze:
    labels = _tree_of(params, lambda n: 'frozen' if re.fullmatch(c.freeze, n) else 'trained')
    tx = optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)
  if multipliers:
    tx = optax.chain(tx, optax.GradientTransformation(
        lambda _: optax.EmptyState(),
        lambda updates, state, _=None: (jax.tree.map(lambda u, m: u * m, updates, scale), state)))
  return tx, schedule
