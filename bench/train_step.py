"""Cost of the training step's machinery over a bare update: ``Trainer.train_step`` vs a minimal jitted step.

    python bench/train_step.py                       # the synthetic benchmark's model (configs/synthetic_nl.py)
    python bench/train_step.py --config=configs/synthetic_nl.py:blocks=none --repeats=50

The reference is the smallest step that trains the same network: ``model.apply`` with BatchNorm updates, the
cross-entropy, ``jax.value_and_grad`` and an optax Adam update, jitted, nothing else. ``Trainer.train_step`` adds
what main.py needs (``shard_map`` over the device mesh, pmean of gradients and BN statistics, top-1/top-5,
gradient norm, the configured optimiser with masked weight decay, donated state). Rows: the reference, the
Trainer with ``accumulation_steps=1``, and the Trainer with the same batch in two micro-batches
(``accumulation_steps=2``, a ``lax.scan``), each timed interleaved with the others (median of ``--repeats``
steps, each waiting for its loss) on one fixed batch. Writes bench/results/train_step.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # pylint: disable=g-import-not-at-top
from nonlocal_jax import sweep, training  # pylint: disable=g-import-not-at-top
from nonlocal_jax.training import parallel  # pylint: disable=g-import-not-at-top
from nonlocal_jax.models import build_model  # pylint: disable=g-import-not-at-top


def bare_step_fn(model, batch):
  """A closure running the minimal jitted update of ``model`` on ``batch`` (the reference)."""
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(batch['clips'][:2]), train=False)
  tx = optax.adam(1e-3)
  carry = [variables['params'], variables['batch_stats'], tx.init(variables['params'])]

  @jax.jit
  def step(params, batch_stats, opt_state, clips, labels):
    def loss_fn(p):
      logits, updates = model.apply({'params': p, 'batch_stats': batch_stats}, clips, train=True,
                                    mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates['batch_stats']
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  def run_step():
    params, stats, opt_state, loss = step(*carry, batch['clips'], batch['label'])
    carry[:] = [params, stats, opt_state]
    return float(loss)
  return run_step


def trainer_step_fn(config, mesh, batch):
  """A closure running ``Trainer.train_step`` of ``config`` on ``batch``."""
  trainer = training.Trainer(config, mesh)
  state = [trainer.init_state()]

  def run_step():
    state[0], metrics = trainer.train_step(state[0], parallel.shard_batch(batch, mesh))
    return float(metrics['loss'])
  return run_step


def main() -> None:
  """Times the steps and writes the results."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/synthetic_nl.py', help='config file[:argument] of the model')
  parser.add_argument('--repeats', type=int, default=100, help='timed steps of each kind')
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  args = parser.parse_args()

  path, arg = sweep.split_spec(args.config)
  config = sweep.load_module(path).get_config(arg)
  d = config.data
  rng = np.random.default_rng(0)
  batch = {'clips': rng.normal(size=(d.global_batch_size, d.num_frames, d.crop_size, d.crop_size, 3)
                               ).astype(np.float32),
           'label': rng.integers(0, config.model.num_classes, d.global_batch_size).astype(np.int32)}
  mesh = parallel.make_mesh()
  accumulated = config.copy_and_resolve_references()
  accumulated.train.accumulation_steps = 2
  fns = {'bare jit step (reference)': bare_step_fn(build_model(config.model), batch),
         'Trainer.train_step, accumulation_steps=1': trainer_step_fn(config, mesh, batch),
         'Trainer.train_step, accumulation_steps=2 (lax.scan)': trainer_step_fn(accumulated, mesh, batch)}
  times = common.time_interleaved(fns, args.repeats)
  reference = times['bare jit step (reference)']
  machine = common.machine_description()
  rows = [(name, f'{t * 1e3:.1f}', f'{t / reference:.2f}') for name, t in times.items()]
  markdown = '\n'.join([
      f'Training step of `{args.config}` (batch {d.global_batch_size} × {d.num_frames}×{d.crop_size}²), '
      f'median of {args.repeats} steps; {common.machine_line(machine)}.', '',
      common.markdown_table(('step', 'ms / step', '× reference'), rows)])
  common.write_results('train_step', {'machine': machine, 'config': args.config, 'repeats': args.repeats,
                                      'seconds_per_step': times}, markdown, args.out_dir)


if __name__ == '__main__':
  main()
