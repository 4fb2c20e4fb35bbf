"""The optimiser: parameter groups (weight decay, lr multipliers, freeze), AdamW, the schedule."""

import jax
import numpy as np
import pytest

from nonlocal_jax import config_ranges
from nonlocal_jax.training import optim
from tests.training import helpers


def test_weight_decay_groups_lr_multipliers_and_freeze():
  config = helpers.load_config()
  params = {'conv1': {'kernel': np.ones((2,), np.float32)}, 'res_conv1_bn': {'scale': np.ones((2,), np.float32),
            'bias': np.ones((2,), np.float32)}, 'pred': {'kernel': np.ones((2,), np.float32),
                                                         'bias': np.ones((2,), np.float32)},
            'nonlocal_conv3_0': {'bn': {'scale': np.ones((2,), np.float32)}}}
  mask = optim.weight_decay_mask(config.train, params)
  assert mask == {'conv1': {'kernel': True}, 'res_conv1_bn': {'scale': False, 'bias': False},
                  'pred': {'kernel': True, 'bias': False}, 'nonlocal_conv3_0': {'bn': {'scale': False}}}
  config.train.lr_multipliers = (('pred/.*', 10.0),)
  config.train.freeze = 'conv1/.*'
  config.train.momentum, config.train.weight_decay, config.train.warmup_steps = 0.0, 0.0, 0
  tx, schedule = optim.create_optimizer(config.train, params, 16)
  grads = jax.tree.map(np.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(schedule(0))
  assert float(updates['conv1']['kernel'][0]) == 0.0
  assert float(updates['pred']['kernel'][0]) == pytest.approx(-10 * lr)
  assert float(updates['res_conv1_bn']['scale'][0]) == pytest.approx(-lr)


def test_adamw_first_steps_match_a_hand_computation():
  # Adam's first update is -lr·g/(|g| + eps) per element (bias-corrected moments equal g and g²), the decoupled
  # decay adds -lr·wd·w only where the mask allows, and the lr multiplier scales the whole update.
  config = helpers.load_config()
  config.train.optimizer, config.train.nesterov = 'adamw', False
  config.train.weight_decay, config.train.warmup_steps, config.train.schedule = 0.1, 0, 'constant'
  config.train.lr_multipliers = (('pred/.*', 3.0),)
  params = {'conv1': {'kernel': np.array([2.0, -1.0], np.float32)},
            'pred': {'bias': np.array([0.5, 0.5], np.float32)}}
  grads = {'conv1': {'kernel': np.array([0.3, -4.0], np.float32)}, 'pred': {'bias': np.array([-2.0, 1e-3], np.float32)}}
  tx, schedule = optim.create_optimizer(config.train, params, 16)
  updates, state = tx.update(grads, tx.init(params), params)
  lr = float(schedule(0))
  np.testing.assert_allclose(updates['conv1']['kernel'], -lr * (np.sign([0.3, -4.0]) + 0.1 * np.array([2.0, -1.0])),
                             rtol=1e-5)
  np.testing.assert_allclose(updates['pred']['bias'], -3 * lr * np.sign([-2.0, 1e-3]), rtol=1e-4)
  # Second step with the same gradient: the moments stay g and g², so the Adam direction is still sign(g).
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['pred']['bias'], -3 * lr * np.sign([-2.0, 1e-3]), rtol=1e-4)


def test_unknown_optimizer_is_refused_by_its_declared_range():
  config = helpers.load_config()
  config.train.optimizer = 'lamb'
  with pytest.raises(config_ranges.OutOfRange, match="optimizer='lamb' is out of range: use one of 'sgd', 'adamw'"):
    config_ranges.check(config)


def test_paper_schedule_with_linear_scaling_and_warmup():
  config = helpers.load_config('kinetics_nl')
  schedule = optim.learning_rate_schedule(config.train, 64)
  assert [float(schedule(s)) for s in (0, 149_999, 150_000, 300_000)] == pytest.approx([0.01, 0.01, 1e-3, 1e-4])
  assert float(optim.learning_rate_schedule(config.train, 8)(0)) == pytest.approx(0.00125)
  config.train.warmup_steps = 100
  schedule = optim.learning_rate_schedule(config.train, 64)
  assert float(schedule(50)) == pytest.approx(0.005)
  assert float(schedule(150_000)) == pytest.approx(1e-3)
  config.train.schedule = 'cosine'
  assert float(optim.learning_rate_schedule(config.train, 64)(400_000)) == pytest.approx(0.0, abs=1e-9)
