"""Real forward passes of tiny networks: identity at init, fully-convolutional testing, BN modes, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.models import ResNetImage, ResNetVideo
from tests.models.helpers import assert_same_function, run, without_nonlocal

TINY = dict(stage_sizes=(1, 1, 1, 1), width=4, num_classes=7, stem='8x8', dropout_rate=0.0)
PLACEMENT = 'res2:0;res3:0;res4:0;res5:0'
CLIP = (2, 8, 64, 64, 3)


@pytest.fixture(scope='module')
def clips():
  return jax.random.normal(jax.random.key(0), CLIP, jnp.float32)


def init(model, x, seed=1):
  return run(lambda k, x: model.init(k, x), jax.random.key(seed), x)


@pytest.mark.parametrize('options', [
    dict(temporal='c2d', nonlocal_block={'pairwise': 'embedded_gaussian'}),
    dict(temporal='i3d_3x1x1', nonlocal_block={'pairwise': 'dot_product', 'positions': 'space'},
         nonlocal_res3_temporal_groups=None),
    dict(temporal='i3d_3x3x3', nonlocal_block={'pairwise': 'concatenation', 'positions': 'time', 'subsample': None},
         norm='affine'),
    dict(temporal='c2d', nonlocal_block={'pairwise': 'gaussian'}, nonlocal_res3_temporal_groups=2),
])
def test_nonlocal_network_equals_plain_network_at_init(clips, options):
  nl = ResNetVideo(nonlocal_locations=PLACEMENT, **TINY, **options)
  plain = ResNetVideo(nonlocal_locations='none', **TINY, **options)

  def init_and_compare(key, x):
    v = nl.init(key, x)
    out = [v]
    for train in (False, True):
      mutable = ['batch_stats'] if train and 'batch_stats' in v else False
      for model, variables in ((nl, v), (plain, without_nonlocal(v))):
        y = model.apply(variables, x, train=train, mutable=mutable)
        out.append(y[0] if mutable else y)
    return out

  variables, nl_eval, plain_eval, nl_train, plain_train = run(init_and_compare, jax.random.key(1), clips)
  assert sorted(k for k in variables['params'] if k.startswith('nonlocal')) == [
      'nonlocal_conv2_0', 'nonlocal_conv3_0', 'nonlocal_conv4_0', 'nonlocal_conv5_0']
  assert_same_function(nl_eval, plain_eval)
  assert_same_function(nl_train, plain_train)


def test_nonlocal_blocks_are_not_skipped(clips):
  # The identity above must come from the zero-initialised BN scale, not from the blocks being bypassed.
  nl = ResNetVideo(nonlocal_locations=PLACEMENT, **TINY)
  variables = init(nl, clips)
  params = dict(variables['params'])
  for name in [k for k in params if k.startswith('nonlocal')]:
    params[name] = {**params[name], 'bn': {**params[name]['bn'], 'scale': jnp.ones_like(params[name]['bn']['scale'])}}
  a, b = run(lambda v, p, x: (nl.apply(v, x), nl.apply({**v, 'params': p}, x)), variables, params, clips)
  assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 1e-6


def test_fully_convolutional_mode_on_256x320():
  model = ResNetVideo(nonlocal_locations='res4:0', **TINY)
  every = ResNetVideo(nonlocal_locations='res4:0', head_window=None, **TINY)
  x = jax.random.normal(jax.random.key(2), (1, 8, 256, 320, 3))
  variables = init(model, x, seed=3)

  def forward(v, x):
    scores, state = model.apply(v, x, fully_convolutional=True, mutable=['intermediates'])
    return scores, state['intermediates']['res5_out'][0], every.apply(v, x, fully_convolutional=True)

  scores, res5, dense = run(forward, variables, x)
  res5 = np.asarray(res5, np.float64)
  assert res5.shape == (1, 4, 8, 10, 128)
  # By hand: average-pool with window (T, 7, 7), stride 1 -> 1×2×4 positions; fc at each; softmax; mean.
  w = np.asarray(variables['params']['pred']['kernel'], np.float64)
  bias = np.asarray(variables['params']['pred']['bias'], np.float64)

  def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

  windows = [res5[0, :, i:i + 7, j:j + 7].mean(axis=(0, 1, 2)) for i in range(2) for j in range(4)]
  expected = softmax(np.stack(windows) @ w + bias).mean(axis=0)
  np.testing.assert_allclose(np.asarray(scores[0]), expected, rtol=1e-5, atol=1e-6)
  assert np.asarray(scores).sum() == pytest.approx(1.0, rel=1e-5)
  # With head_window=None the classifier runs at every one of the 4×8×10 positions.
  expected_dense = softmax(res5[0].reshape(-1, 128) @ w + bias).mean(axis=0)
  np.testing.assert_allclose(np.asarray(dense[0]), expected_dense, rtol=1e-5, atol=1e-6)


def test_fully_convolutional_equals_softmax_of_logits_at_training_size():
  model = ResNetVideo(**TINY)
  x = jax.random.normal(jax.random.key(4), (2, 8, 224, 224, 3))
  variables = init(model, x, seed=5)
  logits, scores = run(lambda v, x: (model.apply(v, x), model.apply(v, x, fully_convolutional=True)),
                       variables, x)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(jax.nn.softmax(logits)), rtol=1e-5, atol=1e-7)


def test_synchronised_batchnorm_averages_over_the_device_axis(clips):
  per_device = ResNetVideo(**TINY)
  synced = ResNetVideo(bn_axis_name='batch', **TINY)
  variables = init(per_device, clips, seed=6)
  shards = clips.reshape(2, 1, *clips.shape[1:])  # two "devices" with one clip each

  def forward(v, x, shards):
    train = lambda m: (lambda x: m.apply(v, x, train=True, mutable=['batch_stats'])[0])
    mapped = lambda m: jax.vmap(train(m), axis_name='batch')(shards).reshape(x.shape[0], -1)
    return train(per_device)(x), mapped(synced), mapped(per_device)

  full, synced_out, per_device_out = run(forward, variables, clips, shards)
  np.testing.assert_allclose(np.asarray(synced_out), np.asarray(full), rtol=1e-4, atol=1e-5)
  assert not np.allclose(np.asarray(per_device_out), np.asarray(full), rtol=1e-4, atol=1e-5)


def test_training_updates_batch_stats_and_applies_dropout(clips):
  model = ResNetVideo(**{**TINY, 'dropout_rate': 0.5})
  variables = init(model, clips, seed=7)

  def train(v, x, key):
    return model.apply(v, x, train=True, mutable=['batch_stats'], rngs={'dropout': key})

  (a, updates), (b, _) = run(lambda v, x: (train(v, x, jax.random.key(8)), train(v, x, jax.random.key(9))),
                             variables, clips)
  before = variables['batch_stats']['res_conv1_bn']['mean']
  assert not np.allclose(np.asarray(updates['batch_stats']['res_conv1_bn']['mean']), np.asarray(before))
  assert not np.allclose(np.asarray(a), np.asarray(b))  # different dropout masks
  with pytest.raises(Exception, match='dropout'):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']), variables, clips)


def test_bfloat16_compute_keeps_float32_parameters_and_logits(clips):
  model = ResNetVideo(dtype=jnp.bfloat16, nonlocal_locations='res3:0', **TINY)
  reference = ResNetVideo(nonlocal_locations='res3:0', **TINY)
  variables = init(model, clips, seed=10)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables['params'])} == {jnp.dtype(jnp.float32)}

  def forward(v, x):
    logits, state = model.apply(v, x, mutable=['intermediates'])
    return logits, state['intermediates']['res3_out'][0], reference.apply(v, x)

  logits, res3, expected = run(forward, variables, clips)
  assert logits.dtype == jnp.float32
  assert res3.dtype == jnp.bfloat16
  scale = float(np.max(np.abs(np.asarray(expected))))
  assert scale > 0
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=0.05 * scale)


def test_image_network_with_nonlocal_blocks_equals_plain_at_init():
  images = jax.random.normal(jax.random.key(11), (2, 32, 32, 3))
  kwargs = dict(stem='cifar', stage_sizes=(1, 2, 1), width=4, num_classes=10)
  nl = ResNetImage(nonlocal_locations='res3:0,1', **kwargs)
  plain = ResNetImage(**kwargs)
  variables = init(nl, images, seed=12)
  assert variables['params']['nonlocal_conv3_1']['theta']['kernel'].shape == (8, 4)
  a, b = run(lambda v, x: (nl.apply(v, x), plain.apply(without_nonlocal(v), x)), variables, images)
  assert_same_function(a, b)
