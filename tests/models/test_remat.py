"""model.remat: the rematerialised networks compute the same function, gradients and BN updates as remat='none',
really rematerialise the blocks they say, and train under the mapped train step."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.data import fake
from nonlocal_jax.models import ResNetVideo
from nonlocal_jax.training import parallel
from tests.models.helpers import run
from tests.training import helpers as training_helpers

TINY = dict(stage_sizes=(1, 1, 1, 1), width=4, num_classes=7, stem='8x8', dropout_rate=0.0,
            nonlocal_locations='res2:0;res3:0;res4:0;res5:0')
CLIP = (2, 8, 64, 64, 3)


def _checkpoints(jaxpr) -> int:
  """The number of rematerialised (jax.checkpoint) calls in a jaxpr, nested ones included."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name in ('checkpoint', 'remat', 'remat2')
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      n += _checkpoints(sub)
  return n


@pytest.mark.parametrize('remat,expected', [('none', 0), ('nonlocal', 4), ('stages', 4), ('all', 8)])
def test_remat_wraps_the_blocks_it_names(remat, expected):
  # Four residual blocks, each followed by a non-local block: the count tells which are rematerialised.
  model = ResNetVideo(**TINY, remat=remat)
  x = jax.ShapeDtypeStruct(CLIP, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(variables, x)
  assert _checkpoints(jaxpr.jaxpr) == expected


def test_remat_keeps_outputs_gradients_and_batch_stats():
  x = jax.random.normal(jax.random.key(0), CLIP, jnp.float32)
  plain, remat = ResNetVideo(**TINY), ResNetVideo(**TINY, remat='all')

  def both(key, x):
    variables = plain.init(key, x)
    # A non-zero BN scale after each non-local block, so that its gradient path is not the identity's.
    params = jax.tree.map(lambda p: p + 0.05, variables['params'])
    out = []
    for model in (plain, remat):
      def loss(p, model=model):
        logits, updates = model.apply({**variables, 'params': p}, x, train=True, mutable=['batch_stats'])
        return jnp.sum(jnp.tanh(logits)), (logits, updates)
      (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
      out.append((aux, grads))
    return out

  ((logits, updates), grads), ((r_logits, r_updates), r_grads) = run(both, jax.random.key(1), x)
  # The forward pass is the same computation: exactly equal.
  np.testing.assert_array_equal(np.asarray(r_logits), np.asarray(logits))
  jax.tree.map(np.testing.assert_array_equal, r_updates, updates)
  # The backward pass recomputes the same operations on the same inputs; XLA may fuse the recomputed copy
  # differently, which reorders float32 sums: a few units of rounding (2^-24 each) of each gradient's scale.
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(r_grads)):
    g, r = np.asarray(g), np.asarray(r)
    scale = np.abs(g).max()
    assert scale > 0
    np.testing.assert_allclose(r, g, rtol=0, atol=64 * 2.0**-24 * scale)


def test_remat_trains_under_the_mapped_train_step():
  # configs/test.py on fake data with synchronised BN (a collective inside the rematerialised blocks).
  config = training_helpers.load_config(**{'data.name': 'fake', 'model.remat': 'all', 'model.bn_axis_name': 'batch'})
  mesh = parallel.make_mesh()
  trainer = training.Trainer(config, mesh)
  state = trainer.init_state()
  before = jax.device_get(state.params)
  batch = fake.batch_fn(config.data, kind='video', num_classes=config.model.num_classes,
                        sharding=parallel.batch_sharded(mesh))(0, 0)
  state, metrics = trainer.train_step(state, batch)
  assert np.isfinite(float(metrics['loss']))
  after = jax.device_get(state.params)
  assert not np.array_equal(after['nonlocal_conv3_0']['theta']['kernel'], before['nonlocal_conv3_0']['theta']['kernel'])
  assert not np.array_equal(after['res2_0']['branch2a']['kernel'], before['res2_0']['branch2a']['kernel'])
