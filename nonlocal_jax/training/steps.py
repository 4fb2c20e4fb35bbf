"""The pure per-device steps: a training update, the test-time prediction and a batch's BatchNorm statistics.

Each is written for one device's share of the batch and mapped over a 1-D mesh with ``jax.shard_map``
(``nonlocal_jax.training.parallel``): gradients, metrics and statistics are averaged over the ``'batch'`` axis.
The training step also says, in one integer computed on the device, which of its values are not finite
(``NONFINITE_PARTS``), so that the loop can stop a diverging run without reading anything back every step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from nonlocal_jax.evaluation.metrics import top_k_correct, top_k_hit
from nonlocal_jax.training import tree_reductions
from nonlocal_jax.training.parallel import AXIS
from nonlocal_jax.training.state import TrainState


# What the 'nonfinite' metric of train_step flags: bit i set <=> NONFINITE_PARTS[i] holds a NaN or an Inf.
NONFINITE_PARTS = ('loss', 'gradient norm', 'parameters', 'BatchNorm statistics', 'optimiser state')


def nonfinite_code(*parts: Any) -> jax.Array:
  """The int32 bitmask of ``parts`` (in the order of NONFINITE_PARTS) that hold a non-finite value; 0: all finite."""
  flags = [jnp.where(tree_reductions.all_finite(part), 0, 1 << i) for i, part in enumerate(parts)]
  return sum(flags).astype(jnp.int32)


def nonfinite_names(code: int) -> list[str]:
  """The names (NONFINITE_PARTS) of the bits set in ``code``."""
  return [name for i, name in enumerate(NONFINITE_PARTS) if int(code) & (1 << i)]


def is_multi_label(labels: Any) -> bool:
  """Whether ``labels`` are multi-hot, (B, K) floats of a multi-label dataset, rather than classes (B,)."""
  return labels.ndim == 2


# What batch_metrics returns, by kind of label.
METRICS = ('top1', 'top5')
MULTI_LABEL_METRICS = ('hit1',)


def batch_metrics(logits: jax.Array, labels: jax.Array) -> dict:
  """The batch means the train step logs besides the loss, by ``metrics``' tie rule.

  Classes: top1 and top5 accuracy. Multi-hot labels: hit1, the share of clips whose top-scoring class is one of
  their positives (``top_k_hit``; cheap and of fixed cost; a per-batch mAP of a few clips would mostly measure
  which classes the batch happens to hold). Clips without a positive count as misses.
  """
  if is_multi_label(labels):
    return {'hit1': top_k_hit(logits, labels, 1).astype(jnp.float32).mean()}
  return {f'top{k}': top_k_correct(logits, labels, k).astype(jnp.float32).mean() for k in (1, 5)}


def _input_key(batch: dict) -> str:
  return 'clips' if 'clips' in batch else 'image'


def _input_of(batch: dict):
  return batch[_input_key(batch)]


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model, tx, schedule,
               accumulation_steps: int = 1, network_input=_input_of) -> tuple[TrainState, dict]:
  """One update on this device's share of the batch; call it under ``shard_map`` over the 'batch' axis.

  The share is split into ``accumulation_steps`` micro-batches, whose gradients are averaged (each micro-batch
  normalises with its own BatchNorm statistics, like one GPU of the paper), then averaged over devices.
  The loss follows the labels (``is_multi_label``): softmax cross-entropy for classes (B,), per-class sigmoid
  cross-entropy, averaged over classes and clips, for multi-hot labels (B, K).
  Returns the new state and the device-averaged metrics loss, top1 and top5 (multi-label: hit1, see
  ``batch_metrics``), grad_norm, learning_rate, and 'nonfinite': the ``nonfinite_code`` of this step's loss,
  gradient norm and new parameters, BatchNorm statistics and optimiser state (0 when all are finite; not an
  average, the loop keeps it out of the logged means). ``network_input`` makes the network's input from a batch
  (``nonlocal_jax.data.device_input.network_input``: resize the views, normalise).
  """
  n = accumulation_steps
  micro = jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
  has_stats = bool(jax.tree.leaves(state.batch_stats))
  multi_label = is_multi_label(batch['label'])

  def loss_fn(params, batch_stats, mb, mb_rng):
    variables = {'params': params, **({'batch_stats': batch_stats} if has_stats else {})}
    logits, updates = model.apply(variables, network_input(mb), train=True,
                                  mutable=['batch_stats'] if has_stats else [], rngs={'dropout': mb_rng})
    if multi_label:
      loss = optax.sigmoid_binary_cross_entropy(logits, mb['label']).mean()
    else:
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, mb['label']).mean()
    return loss, (logits, updates.get('batch_stats', batch_stats) if has_stats else batch_stats)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(carry, inputs):
    grads, batch_stats, sums = carry
    mb, i = inputs
    (loss, (logits, batch_stats)), g = grad_fn(state.params, batch_stats, mb, jax.random.fold_in(rng, i))
    sums = jax.tree.map(jnp.add, sums, {'loss': loss, **batch_metrics(logits, mb['label'])})
    return (jax.tree.map(jnp.add, grads, g), batch_stats, sums), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  sums0 = {k: jnp.zeros((), jnp.float32) for k in ('loss', *(MULTI_LABEL_METRICS if multi_label else METRICS))}
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
  metrics['grad_norm'] = tree_reductions.global_norm(grads)
  metrics['learning_rate'] = schedule(state.step)
  # Checked here, on the device, so that the host reads it only where it reads anyway (logging, checkpoints).
  metrics['nonfinite'] = nonfinite_code(metrics['loss'], metrics['grad_norm'], params, batch_stats, opt_state)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def eval_step(variables: dict, batch: dict, *, model, network_input=_input_of) -> jax.Array:
  """Class probabilities (B, num_classes) of this device's share; videos through the fully-convolutional test.

  Softmax probabilities, or per-class sigmoids when the batch's labels are multi-hot (``is_multi_label``).
  """
  key = _input_key(batch)
  multi_label = 'label' in batch and is_multi_label(batch['label'])
  if key == 'clips':
    return model.apply(variables, network_input(batch), train=False, fully_convolutional=True,
                       multi_label=multi_label)
  logits = model.apply(variables, network_input(batch), train=False)
  return jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)


def batch_stats_step(variables: dict, batch: dict, *, model, network_input=_input_of) -> Any:
  """The BatchNorm statistics of one batch (``model`` has bn_momentum=0, so running = batch), device-averaged."""
  _, updates = model.apply(variables, network_input(batch), train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.PRNGKey(0)})
  return lax.pmean(updates['batch_stats'], AXIS)
