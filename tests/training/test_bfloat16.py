"""model.dtype='bfloat16': the tiny network trains in bf16 with float32 parameters, optimiser state and loss, and its
losses follow the float32 run's within a bound derived from bf16's rounding."""

import jax
import jax.numpy as jnp
import numpy as np

from nonlocal_jax import training
from nonlocal_jax.data import fake
from nonlocal_jax.training import parallel
from tests.training import helpers

# Unit roundoff of bfloat16: an 8-bit significand (7 stored bits + the implicit one), so rounding to nearest
# changes a value by at most 2^-8 of itself.
U = 2.0 ** -8
# bf16 roundings on the deepest forward path of configs/test.py's network (stage sizes 1,1,1,1, NL after res3_0):
# conv1 + its BN (2); each of the 4 bottlenecks: 3 convs, 3 BNs, the residual add (4 x 7 = 28); the non-local
# block: theta/phi/g, the float32 softmax weights cast to bf16, the weighted sum, W_z, its BN, the add (6); the
# float32 mean pool cast to bf16 and the classifier (2). The logits then go to float32 (softmax and loss in float32).
ROUNDINGS = 2 + 28 + 6 + 2
STEPS = 3
LEARNING_RATE = 0.005  # Small: the runs stay in the first-order regime that the bound below assumes.


def _bound(pooled, kernel, bias, grad_norm, step):
  """How far the bf16 loss of step ``step`` (0-based) may be from the float32 one, to first order in U.

  Forward: each of the n = ROUNDINGS roundings perturbs its tensor by at most U of its magnitude; BN and the linear
  layers carry such perturbations along at their scale, so logit j of example b moves by at most
  n U (|pooled_b| . |W_j| + |b_j|) =: n U A_bj. The loss's gradient in the logits, softmax - onehot, has an L1 norm
  <= 2, so the loss moves by at most 2 n U max A.
  Backward: the gradient goes back through as many roundings, so it is off by at most 2 n U G (G: the float32
  gradient norm). Nesterov SGD's update weighs each past gradient by at most 2 (g_t + mu trace_t, mu < 1), so after
  s steps the parameters differ by at most lr * 2 * sum_{t<s} (t + 1) 2 n U G = 2 n U lr G s (s + 1), and the loss,
  whose gradient norm is <= G, by G times that. (Weight decay's share, 1e-4 of this, is below the first order.)
  """
  forward = 2 * ROUNDINGS * U * float(np.max(np.abs(pooled) @ np.abs(kernel) + np.abs(bias)))
  drift = 2 * ROUNDINGS * U * LEARNING_RATE * grad_norm ** 2 * step * (step + 1)
  return forward + drift


def _run(dtype, mesh, batches, with_features):
  """The losses and grad norms of STEPS steps of the tiny network in ``dtype``, the pre-classifier features of each
  step's batch with the classifier (if ``with_features``; the bound needs the float32 run's only), and the final
  state."""
  config = helpers.load_config(**{'data.name': 'fake', 'train.schedule': 'constant', 'model.dtype': dtype,
                                  'train.base_learning_rate': LEARNING_RATE})
  trainer = training.Trainer(config, mesh)
  state = trainer.init_state()
  features = jax.jit(lambda variables, clips: trainer.model.apply(
      variables, clips, train=True, mutable=['batch_stats', 'intermediates'])[1]['intermediates']['pool5_out'][0])
  losses, grad_norms, inputs = [], [], []
  for batch in batches:
    if with_features:
      inputs.append((np.asarray(features(trainer.variables(state), batch['clips'])),
                     np.asarray(state.params['pred']['kernel']), np.asarray(state.params['pred']['bias'])))
    state, metrics = trainer.train_step(state, batch)  # Donates the old state.
    losses.append(float(metrics['loss']))
    grad_norms.append(float(metrics['grad_norm']))
  return losses, grad_norms, inputs, state


def test_bfloat16_training_follows_float32_and_keeps_float32_state():
  mesh = parallel.make_mesh()
  config = helpers.load_config(**{'data.name': 'fake'})
  stream = fake.train_iterator(config.data, seed=0, kind='video', num_classes=config.model.num_classes,
                               sharding=parallel.batch_sharded(mesh))
  batches = [next(stream) for _ in range(STEPS)]
  losses32, grads32, inputs32, state32 = _run('float32', mesh, batches, with_features=True)
  losses16, _, _, state16 = _run('bfloat16', mesh, batches, with_features=False)

  for name, tree in (('params', state16.params), ('opt_state', state16.opt_state),
                     ('batch_stats', state16.batch_stats)):
    kinds = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert kinds == {jnp.dtype(jnp.float32)}, (name, kinds)
  assert np.all(np.isfinite(losses16))
  for step in range(STEPS):
    bound = _bound(*inputs32[step], max(grads32[:step + 1]), step)
    assert abs(losses16[step] - losses32[step]) <= bound, (step, losses16, losses32, bound)
  assert losses16 != losses32  # The bf16 run did compute in bf16 (not silently in float32).
