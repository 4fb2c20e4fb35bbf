"""``FusedBatchNorm``: flax's ``nn.BatchNorm`` values and variables exactly, gradients against flax's automatic
ones and against central differences of a float64 NumPy BatchNorm, and 'auto' following the device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import attention_auto
from nonlocal_jax.layers import batch_norm
from nonlocal_jax.models import ResNetVideo
from tests.layers.family_helpers import relative_error

_SHAPE = (2, 3, 4, 5, 6)  # (B, T, H, W, C): statistics over 120 positions per channel.


def _x(seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  # Channels of different means and spreads, as after a convolution.
  return jnp.asarray(rng.normal(size=_SHAPE) * rng.uniform(0.5, 3, 6) + rng.normal(size=6) * 2, dtype)


def _pair(relu, **fields):
  """(flax's BatchNorm then ReLU if ``relu``, the fused one), as functions of (variables, x, train)."""
  flax_bn, fused = nn.BatchNorm(**fields), batch_norm.FusedBatchNorm(relu=relu, **fields)

  def run_flax(variables, x, train):
    y, updates = flax_bn.apply(variables, x, use_running_average=not train, mutable=['batch_stats'])
    return (nn.relu(y) if relu else y), updates

  def run_fused(variables, x, train):
    return fused.apply(variables, x, use_running_average=not train, mutable=['batch_stats'])
  return flax_bn, fused, run_flax, run_fused


def _random_variables(bn, x, seed):
  """Random scale, bias and running mean of either sign, and a positive running variance."""
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  rng = np.random.default_rng(seed)
  signed = lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape) * rng.choice([-1, 1], v.shape), v.dtype)
  randomized = jax.tree.map(signed, variables)
  randomized['batch_stats']['var'] = jnp.abs(randomized['batch_stats']['var'])
  return randomized


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('fast_variance', [True, False])
@pytest.mark.parametrize('relu', [False, True])
def test_values_and_variables_are_flaxs(dtype, fast_variance, relu):
  fields = dict(momentum=0.9, epsilon=1e-5, dtype=dtype, use_fast_variance=fast_variance)
  flax_bn, fused, run_flax, run_fused = _pair(relu, **fields)
  x = _x(1, dtype)
  init_flax = flax_bn.init(jax.random.key(0), x, use_running_average=False)
  init_fused = fused.init(jax.random.key(0), x, use_running_average=False)
  assert jax.tree.map(lambda a: (a.shape, a.dtype, np.asarray(a).tolist()), init_flax) == \
      jax.tree.map(lambda a: (a.shape, a.dtype, np.asarray(a).tolist()), init_fused)
  variables = _random_variables(flax_bn, x, 2)
  for train in (True, False):
    (y_flax, up_flax), (y_fused, up_fused) = run_flax(variables, x, train), run_fused(variables, x, train)
    assert y_fused.dtype == y_flax.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y_fused, np.float32), np.asarray(y_flax, np.float32))
    jax.tree.map(np.testing.assert_array_equal, up_fused, up_flax)
  # With the running averages there is no written-out backward pass: flax's own gradient, ReLU's included.
  x_grad = lambda run: jax.grad(lambda x: jnp.sum(run(variables, x, False)[0].astype(jnp.float32) ** 2))(x)
  np.testing.assert_array_equal(x_grad(run_fused), x_grad(run_flax))


def _bn64(x, scale, bias, eps, relu, fast_variance):
  """Training-mode BatchNorm (then ReLU) over all axes but the last, in float64."""
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  var = (x ** 2).mean(axes) - mean ** 2 if fast_variance else ((x - mean) ** 2).mean(axes)
  y = (x - mean) / np.sqrt(var + eps) * scale + bias
  return (np.maximum(y, 0) if relu else y), mean, var


@pytest.mark.parametrize('fast_variance', [True, False])
@pytest.mark.parametrize('relu', [False, True])
def test_gradients_match_flax_and_float64_differences(fast_variance, relu):
  x = _x(3)
  rng = np.random.default_rng(4)
  scale, bias = rng.uniform(0.5, 2, 6).astype(np.float32), rng.normal(size=6).astype(np.float32)
  # Weights on the output and on the two statistics: the latter check their own cotangents' terms.
  r, a, b = rng.normal(size=_SHAPE), rng.normal(size=6), rng.normal(size=6)

  def loss_fused(x, scale, bias):
    y, mean, var = batch_norm.batch_norm_train(x, scale, bias, 1e-5, (0, 1, 2, 3), fast_variance, relu,
                                               jnp.float32)
    return jnp.sum(y * r) + jnp.sum(mean * a) + jnp.sum(var * b)

  def loss_flax(x, scale, bias):
    bn = nn.BatchNorm(use_running_average=False, use_fast_variance=fast_variance, epsilon=1e-5)
    y, _ = bn.apply({'params': {'scale': scale, 'bias': bias},
                     'batch_stats': {'mean': jnp.zeros(6), 'var': jnp.ones(6)}}, x, mutable=['batch_stats'])
    x32 = x.astype(jnp.float32)
    mean = x32.mean((0, 1, 2, 3))
    var = ((x32 - mean) ** 2).mean((0, 1, 2, 3))
    return jnp.sum((nn.relu(y) if relu else y) * r) + jnp.sum(mean * a) + jnp.sum(var * b)

  fused = jax.jit(jax.grad(loss_fused, argnums=(0, 1, 2)))(x, scale, bias)
  flax_grads = jax.jit(jax.grad(loss_flax, argnums=(0, 1, 2)))(x, scale, bias)
  for name, got, want in zip(('x', 'scale', 'bias'), fused, flax_grads):
    assert relative_error(got, want) <= 2e-5, name

  directions = [rng.normal(size=np.shape(v)) for v in (x, scale, bias)]
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in zip(fused, directions))

  def loss64(eps):
    moved = [np.asarray(v, np.float64) + eps * d for v, d in zip((x, scale, bias), directions)]
    y, mean, var = _bn64(*moved, 1e-5, relu, fast_variance)
    return float(np.sum(y * r) + np.sum(mean * a) + np.sum(var * b))

  numeric = (loss64(1e-5) - loss64(-1e-5)) / 2e-5
  assert abs(analytic - numeric) <= 1e-4 * abs(numeric)


def test_auto_is_fused_on_a_gpu_with_per_device_statistics():
  assert batch_norm.resolve('auto', None) == 'flax'  # This CPU: nn.BatchNorm, the figures as measured.
  assert batch_norm.resolve('fused', None) == 'fused'

  class Gpu:
    platform, device_kind = 'cuda', 'NVIDIA H200'
  with attention_auto.compiling_for(Gpu()):
    assert batch_norm.resolve('auto', None) == 'fused'
    assert batch_norm.resolve('auto', 'batch') == 'flax'  # Synchronised BN stays with flax.
  with pytest.raises(ValueError, match="bn_implementation='fused' computes each device's own statistics"):
    batch_norm.check('fused', 'batch')
  with pytest.raises(ValueError, match='bn_implementation must be one of'):
    ResNetVideo(stage_sizes=(1, 1, 1, 1), width=4, bn_implementation='cudnn').check()


def test_a_network_with_fused_batch_norm_is_the_same_function():
  kwargs = dict(num_classes=5, stage_sizes=(1, 1, 1, 1), width=4, stem='8x8')
  flax_net, fused_net = (ResNetVideo(bn_implementation=k, **kwargs) for k in ('flax', 'fused'))
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 2, 32, 32, 3)), jnp.float32)
  variables = jax.jit(flax_net.init)(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(jax.eval_shape(fused_net.init, jax.random.key(0), x))

  def loss(net):
    def f(params):
      logits, updates = net.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'],
                                  rngs={'dropout': jax.random.key(1)})
      return jnp.sum(logits * jnp.arange(5.0)), (logits, updates)
    return jax.jit(jax.value_and_grad(f, has_aux=True))(variables['params'])

  (_, (logits_flax, up_flax)), grads_flax = loss(flax_net)
  (_, (logits_fused, up_fused)), grads_fused = loss(fused_net)
  np.testing.assert_array_equal(logits_fused, logits_flax)
  jax.tree.map(np.testing.assert_array_equal, up_fused, up_flax)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_flax))
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(grads_fused)[0], jax.tree.leaves(grads_flax)):
    # Some gradients are 0 but for rounding (a bias before a BatchNorm, which cancels it): those are compared
    # against the largest gradient's size.
    assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-4 * max(float(np.abs(want).max()), 1e-2 * scale), \
        jax.tree_util.keystr(path)
