"""Every config field's declared range (configs/default.py, nonlocal_jax/config_ranges.py), checked at start-up.

Each invalid value must end in one ConfigError sentence from ``training.check_config`` naming the field, the value
and what is allowed, before the model is built (``build_model`` is replaced by a function that fails the test).
"""

import math
import subprocess
import sys

import pytest

from nonlocal_jax import config_files
from nonlocal_jax import config_ranges
from nonlocal_jax import training
from nonlocal_jax.training import checks
from tests.training import helpers

SECTIONS = ('data', 'train', 'multihost')


def _leaves(node, prefix=''):
  """Dotted paths of the fields of a ConfigDict, sub-dicts walked into."""
  for key in node.keys():
    value = node[key]
    if hasattr(value, 'keys'):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def _default():
  return config_files.load_module(config_ranges.DEFAULT_CONFIG).get_config()


def _fields():
  default = _default()
  top = [k for k in default.keys() if not hasattr(default[k], 'keys')]
  return top + [p for s in SECTIONS for p in _leaves(default[s], f'{s}.')]


def _invalid(allowed):
  """One value outside ``allowed``, written by hand per kind of range from the declaration's bounds."""
  kind, b = allowed.kind, allowed.bounds
  if kind == 'integer':
    low, high, high_open = b
    return low - 1 if low is not None else (high if high_open else high + 1)
  if kind == 'number':
    low, high, low_open, high_open = b
    return float(low) if low_open else low - 0.5
  if kind == 'numbers':
    count, low, low_open = b
    return (float(low),) * count if low_open else (low - 1.0,) * count
  return {'increasing_integers': (4, 2), 'one_of': 'no_such_value', 'flag': 'yes', 'text': '', 'matching': 'a b',
          'regex': '([', 'regex_multipliers': (('pred/.*', -1.0),)}[kind]


def _set(config, path, value):
  *sections, field = path.split('.')
  node = config
  for section in sections:
    node = node[section]
  with node.ignore_type():  # The wrong type is part of what is tested (a config file can write anything).
    node[field] = value
  return config


@pytest.fixture
def no_model(monkeypatch):
  """build_model fails the test: a range error must come before anything is built."""
  def fail(_):
    raise AssertionError('build_model ran before the range error')
  monkeypatch.setattr(checks, 'build_model', fail)


def test_every_field_of_default_declares_a_range_its_default_is_in():
  declared = config_ranges.declared()
  fields = _fields()
  assert len(fields) > 50 and set(fields) <= set(declared), sorted(set(fields) - set(declared))
  default = _default()
  for path in fields:
    value = default
    for key in path.split('.'):
      value = value[key]
    assert declared[path].problem(value) is None, (path, value)


@pytest.mark.parametrize('path', _fields())
def test_each_field_out_of_range_is_one_sentence_before_the_model(no_model, path):
  value = _invalid(config_ranges.declared()[path])
  config = _set(helpers.load_config('test'), path, value)
  with pytest.raises(training.ConfigError) as error:
    training.check_config(config)
  message = str(error.value)
  assert message.startswith(f'config.{path}={value!r} is out of range: use ')
  assert message.endswith('.') and '\n' not in message


@pytest.mark.parametrize('path, value', [
    ('train.momentum', -0.5), ('train.base_learning_rate', -0.1), ('train.weight_decay', -1e-4),
    ('train.warmup_steps', -5), ('train.momentum', 1.0), ('train.step_factor', 0.0), ('data.prefetch_batches', -1),
    ('data.mean', (1.0, 2.0)), ('train.base_learning_rate', math.inf), ('data.num_frames', 2.5),
    ('multihost.num_processes', 0), ('train.freeze', '(['), ('train.lr_multipliers', (('([', 2.0),)),
])
def test_values_accepted_before_now_fail(no_model, path, value):
  with pytest.raises(training.ConfigError, match=r'^config\.' + path.replace('.', r'\.') + '=.* is out of range'):
    training.check_config(_set(helpers.load_config('test'), path, value))


@pytest.mark.parametrize('path, message', [
    ('train.momentum', 'config.train.momentum=-0.5 is out of range: use a number in [0, 1).'),
    ('train.weight_decay', 'config.train.weight_decay=-0.5 is out of range: use a number ≥ 0.'),
    ('train.base_learning_rate', 'config.train.base_learning_rate=-0.5 is out of range: use a number > 0.'),
])
def test_the_sentence_names_field_value_and_range(no_model, path, message):
  with pytest.raises(training.ConfigError) as error:
    training.check_config(_set(helpers.load_config('test'), path, -0.5))
  assert str(error.value) == message


@pytest.mark.parametrize('path, value', [
    ('train.momentum', 0.0), ('train.momentum', 0.999), ('train.warmup_steps', 0), ('train.step_factor', 1.0),
    ('train.step_boundaries', ()), ('data.prefetch_batches', 0), ('seed', 2**31 - 1), ('eval_step', 0),
    ('multihost.coordinator_address', '10.0.0.1:1234'), ('train.weight_decay_exclude', None),
    ('train.lr_multipliers', (('pred/.*', 10.0),)), ('data.std', (1.0, 1.0, 1.0)),
])
def test_values_at_the_edge_of_a_range_are_accepted(path, value):
  config_ranges.check(_set(helpers.load_config('test'), path, value))


@pytest.mark.parametrize('changes, message', [
    ({'data.crop_size': 20}, 'crop_size must be at most train_short_side_min'),
    ({'data.train_short_side_max': 8}, 'train_short_side_min must be at most train_short_side_max'),
    ({'data.synthetic.digit_size': 20}, r'digit_size=20 must be at most synthetic.size=16'),
])
def test_fields_that_disagree_fail_before_the_model(no_model, changes, message):
  with pytest.raises(training.ConfigError, match=message):
    training.check_config(helpers.load_config('test', **changes))


@pytest.mark.parametrize('changes, message', [
    ({'model.name': 'resnet_x'}, r"model.name must be one of"),
    ({'model.num_classes': 0}, 'num_classes must be a positive integer, got 0'),
    ({'model.stage_sizes': (1, 0, 1, 1)}, 'stage_sizes must be positive block counts'),
    ({'model.width': 0}, 'width must be a positive integer'),
    ({'model.stem_pool_padding': 2}, 'stem_pool_padding must be 0'),
    ({'model.dropout_rate': 1.5}, r'dropout_rate must be in \[0, 1\)'),
    ({'model.conv_implementation': 'cuda'}, 'conv_implementation must be one of'),
    ({'model.pool_implementation': 'fast'}, 'pool_implementation must be one of'),
    ({'model.nonlocal_res3_temporal_groups': 0}, 'nonlocal_res3_temporal_groups must be a positive integer'),
    ({'model.nonlocal_block.subsample': (0, 2, 2)}, 'nonlocal_block.subsample must be a window of positive'),
    ({'model.nonlocal_block.implementation': 'x'}, 'nonlocal_block.implementation must be one of'),
    ({'model.bn_axis_name': ''}, "bn_axis_name must be None or a mapped axis name such as 'batch'"),
    ({'model.bn_momentum': 1.5}, r'bn_momentum must be a number in \[0, 1\], got 1.5'),
    ({'model.bn_epsilon': -1.0}, 'bn_epsilon must be a positive number, got -1.0'),
    ({'model.residual_bn_init': float('nan')}, 'residual_bn_init must be a finite number, got nan'),
    ({'model.head_window': (0, 7)}, r'head_window must be an \(H, W\) window'),
    ({'model.nonlocal_block.chunk_size': 0}, 'nonlocal_block.chunk_size must be a positive integer'),
    ({'model.nonlocal_block.max_affinity_bytes': -1}, 'nonlocal_block.max_affinity_bytes must be a positive integer'),
    ({'model.nonlocal_block.inter_channels': -4}, 'nonlocal_block.inter_channels must be a positive integer'),
])
def test_model_fields_fail_in_one_sentence_at_start_up(changes, message):
  with pytest.raises(training.ConfigError, match=message) as error:
    training.check_config(helpers.load_config('test', **changes))
  assert '\n' not in str(error.value)


def test_config_file_argument_error_is_one_sentence_without_traceback(tmp_path):
  command = [sys.executable, 'main.py', '--config=configs/kinetics_nl.py:depth=152', f'--workdir={tmp_path}']
  result = subprocess.run(command, env=helpers.env_for(1), cwd=helpers.ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip() == ("Error: configs/kinetics_nl.py argument depth='152': the value must be one of "
                                   "['101', '50'].")
