"""The non-local family in the networks (issue 17): ``config.model.nonlocal_block.kind``, the kinetics_nl.py
``block=`` variant, the summary's exact counts per kind, identity at init, and the errors."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax import training
from nonlocal_jax.layers import BLOCK_KINDS
from nonlocal_jax.models import ResNetImage, ResNetVideo, build_model
from nonlocal_jax.models.registry import nonlocal_block_config
from nonlocal_jax.models.summary import analyse, describe
from nonlocal_jax.training import checks
from tests.models.helpers import assert_same_function, run, without_nonlocal
from tests.models.test_config_and_errors import load_config
from tests.training import helpers

FAMILY = ('gc', 'apnb', 'cc')
TINY = dict(stage_sizes=(1, 1, 1, 1), width=4, num_classes=7, stem='8x8', dropout_rate=0.0)
PLACEMENT = 'res3:0;res5:0'  # res5 is 1×1 in space: APNB's 8 bins repeat that one position


def spec(kind, **fields):
  return flax.core.FrozenDict(dict(nonlocal_block_config('resnet_video', kind).to_dict(), **fields))


def test_every_kind_is_registered_with_the_family_interface():
  assert {'nonlocal', 'gc', 'apnb', 'cc'} <= set(BLOCK_KINDS)
  for kind, cls in BLOCK_KINDS.items():
    assert callable(getattr(cls, 'check', None)), kind
    assert kind == 'nonlocal' or callable(getattr(cls, 'attention_macs', None)), kind


# One block in res4 (placement '1') at 32×112×112: res4 is 4×7×7×1024.
INPUT = (1, 32, 112, 112, 3)


def hand_count(kind, t, h, w, c=1024):
  """(parameters, multiply-adds) of one block of ``kind`` at the defaults, by hand from its paper's equations."""
  n = t * h * w
  if kind == 'gc':  # W_k, W_v1, LN, W_v2; W_k x, Σ α x, and the two transform layers on one vector.
    r = c // 16
    return c + (c * r + r) + 2 * r + (r * c + c), n * c + n * c + c * r + r * c
  if kind == 'apnb':  # θ, φ, γ, W_z, BN; θ on N, φ and γ on S = T·110 anchors, W_z, then θᵀφ_P and f·γ_P.
    ci, s = c // 2, t * 110
    params = 3 * (c * ci + ci) + (ci * c + c) + 2 * c
    return params, n * c * ci + 2 * s * c * ci + n * ci * c + 2 * n * s * ci
  if kind == 'cc':  # Q, K, V, γ; per step Q, K, V and each position's T + H + W keys (affinity and sum), R = 2.
    ci = c // 8
    params = 2 * (c * ci + ci) + (c * c + c) + 1
    return params, 2 * (2 * n * c * ci + n * c * c + n * (t + h + w) * (ci + c))
  raise AssertionError(kind)


@pytest.mark.parametrize('kind', FAMILY)
def test_summary_counts_one_block_by_hand(kind):
  plain = analyse(ResNetVideo(depth=50), INPUT)
  model = ResNetVideo(depth=50, nonlocal_locations='1', nonlocal_block=spec(kind))
  one = analyse(model, INPUT)
  t, h, w = model.feature_sizes(INPUT[1:4])['res4']
  assert (t, h, w) == (4, 7, 7)
  params, macs = hand_count(kind, t, h, w)
  assert one.params - plain.params == params
  assert one.macs - plain.macs == macs
  assert {r.stage: r.nonlocal_blocks for r in one.rows}['res4'] == 1
  assert f'kind {kind}' in describe(model)


PARAMETERS = {'gc': {'mask', 'bottleneck', 'ln', 'expand'}, 'apnb': {'theta', 'phi', 'g', 'out', 'bn'},
              'cc': {'query', 'key', 'value', 'gamma'}}


@pytest.mark.parametrize('kind,norm', [('gc', 'batch'), ('apnb', 'affine'), ('cc', 'batch')])
def test_network_with_family_blocks_equals_plain_network_at_init(kind, norm):
  clips = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
  model = ResNetVideo(nonlocal_locations=PLACEMENT, nonlocal_block=spec(kind), norm=norm, **TINY)
  plain = ResNetVideo(nonlocal_locations='none', norm=norm, **TINY)

  def init_and_compare(key, x):
    v = model.init(key, x)
    return v, model.apply(v, x), plain.apply(without_nonlocal(v), x)

  variables, ours, theirs = run(init_and_compare, jax.random.key(1), clips)
  blocks = sorted(k for k in variables['params'] if k.startswith('nonlocal'))
  assert blocks == ['nonlocal_conv3_0', 'nonlocal_conv5_0']
  assert set(variables['params']['nonlocal_conv3_0']) == PARAMETERS[kind]
  if kind == 'apnb':
    # The block follows the network's norm: an affine, no BatchNorm statistics, in a frozen-BN network.
    assert 'batch_stats' not in variables and set(variables['params']['nonlocal_conv3_0']['bn']) == {'scale', 'bias'}
  assert_same_function(ours, theirs)


def test_image_network_takes_a_kind():
  images = jax.random.normal(jax.random.key(11), (2, 32, 32, 3))
  kwargs = dict(stem='cifar', stage_sizes=(1, 2, 1), width=4, num_classes=10)
  model = ResNetImage(nonlocal_locations='res3:0,1', nonlocal_block=flax.core.FrozenDict(
      nonlocal_block_config('resnet_image', 'cc').to_dict()), **kwargs)
  variables = run(lambda k, x: model.init(k, x), jax.random.key(12), images)
  assert variables['params']['nonlocal_conv3_1']['query']['kernel'].shape == (8, 1)


def test_default_kind_keeps_the_non_local_spec_and_parameter_names():
  config = load_config('kinetics_nl', 'blocks=1')
  assert config.model.nonlocal_block.kind == 'nonlocal'
  with_kind = build_model(config.model)
  without = dict(config.model.nonlocal_block.to_dict())
  del without['kind']
  config.model.nonlocal_block = without
  assert with_kind.nonlocal_kwargs() == build_model(config.model).nonlocal_kwargs()
  _, variables = jax.eval_shape(lambda x: with_kind.init_with_output(jax.random.key(0), x), jnp.zeros(INPUT))
  assert set(variables['params']['nonlocal_conv4_4']) == {'theta', 'phi', 'g', 'out', 'bn'}


@pytest.mark.parametrize('kind', FAMILY)
def test_kinetics_nl_block_variant(kind):
  config = load_config('kinetics_nl', f'block={kind},blocks=5')
  assert dict(config.model.nonlocal_block) == nonlocal_block_config('resnet_video', kind).to_dict()
  model = build_model(config.model)
  assert model.nonlocal_kind() == kind and model.num_nonlocal_blocks() == 5


def test_kinetics_nl_rejects_non_local_options_for_another_block():
  with pytest.raises(ValueError, match=r'argument pairwise= sets an option of the non-local block'):
    load_config('kinetics_nl', 'block=gc,pairwise=dot_product')


def test_switching_the_kind_on_the_default_spec_drops_only_untouched_non_local_keys():
  # --config.model.nonlocal_block.kind=gc on a config generated for the non-local block works ...
  config = load_config('kinetics_nl', 'blocks=1')
  config.model.nonlocal_block.kind = 'gc'
  # (the keys both blocks have are kept; GCBlock's own fields keep its defaults)
  assert build_model(config.model).nonlocal_kwargs() == {'weight_init': 'official', 'use_bias': True,
                                                         'sow_attention': True, 'dtype': jnp.float32}
  # ... but a non-local option that was changed is an error naming it, not silently dropped.
  config.model.nonlocal_block.pairwise = 'dot_product'
  with pytest.raises(ValueError, match=r"nonlocal_block has key\(s\) \['pairwise'\] that GCBlock \(kind='gc'\)"):
    build_model(config.model)


def test_one_spec_for_several_kinds_switches_in_a_locked_config():
  # A sweep over kinds sets keys of a locked config: one spec holding every kind's keys serves all of them.
  config = load_config('kinetics_nl', 'blocks=1')
  config.model.nonlocal_block = nonlocal_block_config('resnet_video', 'nonlocal', extra_kinds=('gc', 'cc'))
  config.lock()
  nonlocal_kwargs = build_model(config.model).nonlocal_kwargs()
  assert nonlocal_kwargs == build_model(load_config('kinetics_nl', 'blocks=1').model).nonlocal_kwargs()
  config.model.nonlocal_block.update({'kind': 'cc', 'gamma_init': 0.5, 'recurrence': 1})
  cc = build_model(config.model).nonlocal_kwargs()
  assert (cc['gamma_init'], cc['recurrence'], cc['inter_channels']) == (0.5, 1, None) and 'pairwise' not in cc
  config.model.nonlocal_block.kind = 'gc'  # CC's changed gamma_init is not GC's: an error, not ignored.
  with pytest.raises(ValueError, match=r"\['gamma_init', 'recurrence'\] that GCBlock"):
    build_model(config.model)


BAD = [
    ({'kind': 'gc', 'reduction': 0}, {}, r'^nonlocal_block\.reduction must be a positive integer'),
    ({'kind': 'apnb', 'fusion': 'mean'}, {}, r'^nonlocal_block\.fusion must be one of'),
    ({'kind': 'cc', 'recurrence': 0}, {}, r'^nonlocal_block\.recurrence must be a positive integer'),
    ({'kind': 'gc'}, {'nonlocal_res3_temporal_groups': 2}, r'nonlocal_res3_temporal_groups=2 .*kind=.nonlocal.'),
    ({'kind': 'transformer'}, {}, r"^nonlocal_block\.kind must be one of \('nonlocal', 'gc'"),
]


@pytest.mark.parametrize('block,model_fields,message', BAD)
def test_bad_block_specs_name_the_field(block, model_fields, message):
  with pytest.raises(ValueError, match=message):
    ResNetVideo(nonlocal_locations='1', nonlocal_block=flax.core.FrozenDict(block), **model_fields).check()


def test_kind_out_of_range_is_one_sentence_before_the_model(monkeypatch):
  def fail(_):
    raise AssertionError('build_model ran before the range error')
  monkeypatch.setattr(checks, 'build_model', fail)
  config = helpers.load_config('test')
  config.model.nonlocal_block.kind = 'transformer'
  with pytest.raises(training.ConfigError, match=r"^config\.model\.nonlocal_block\.kind='transformer' is out of "
                                                 r"range: use one of 'nonlocal', 'gc'"):
    training.check_config(config)
