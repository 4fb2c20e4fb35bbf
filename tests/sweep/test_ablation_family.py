"""configs/ablation_family.py: C2D, the non-local block and each successor in the same places.

The successors are selected by config.model.nonlocal_block.kind (part A of issue 17). Where that key exists, every
variant builds and its cost is counted; where it does not yet, the successor variants fail in one sentence that
names the key, before anything trains.
"""

import os

import pytest

from nonlocal_jax import sweep
from tests.sweep import helpers

PATH = os.path.join(helpers.ROOT, 'configs', 'ablation_family.py')


def test_variants_are_c2d_nl_and_every_successor_in_the_same_places():
  module = sweep.load_module(PATH)
  variants = sweep.load_variants(module, 'synthetic')
  assert [v.name for v in variants] == ['c2d', 'nl', 'gc', 'apnb', 'cc', 'cgnl', 'a2', 'cc_r3']
  for v in variants[2:]:
    assert v.overrides['model.nonlocal_block.kind'] == v.name.split('_')[0]
    assert 'model.nonlocal_locations' not in v.overrides  # the base's places: after res3 and res4
  base = module.get_config('synthetic')
  assert base.model.nonlocal_locations == 'res3:0;res4:0'
  cc, cc_r3 = (next(v for v in variants if v.name == n) for n in ('cc', 'cc_r3'))
  assert cc_r3.overrides == dict(cc.overrides, **{'model.nonlocal_block.recurrence': 3})


def test_each_variant_builds_or_names_the_missing_key():
  module = sweep.load_module(PATH)
  base = module.get_config('synthetic')
  has_kind = 'kind' in base.model.nonlocal_block
  costs = {}
  for v in sweep.load_variants(module, 'synthetic'):
    if 'model.nonlocal_block.kind' in v.overrides and not has_kind:
      with pytest.raises(sweep.SweepError, match=r'config\.model\.nonlocal_block\.kind'):
        sweep.variant_config(base, v)
      continue
    costs[v.name] = sweep.model_cost(sweep.variant_config(base, v))
  assert costs['c2d'][0] < costs['nl'][0] and costs['c2d'][1] < costs['nl'][1]  # the blocks are in the network
  if has_kind:
    assert len({c for c in costs.values()}) == len(costs)  # every kind is a different network


def test_kinetics_scale_and_bad_argument():
  module = sweep.load_module(PATH)
  assert module.get_config('kinetics').data.name == 'kinetics400'
  with pytest.raises(ValueError, match='kinetics \\(default\\) or synthetic'):
    module.get_sweep('cifar')
