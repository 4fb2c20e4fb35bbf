"""Sweep variants: every ablation sweep builds at both scales, overrides of any depth reach the config, and a bad
sweep, override or seed list fails in one sentence."""

import os

import pytest

from nonlocal_jax import sweep
from tests.sweep import helpers

ROOT, SPEC = helpers.ROOT, helpers.SPEC
ABLATIONS = ('pairwise', 'stage', 'blocks', 'positions', 'arch')


@pytest.mark.parametrize('name', ABLATIONS)
def test_ablation_sweeps_build_at_both_scales(name):
  for arg in (None, 'synthetic'):
    module = sweep.load_module(os.path.join(ROOT, 'configs', f'ablation_{name}.py'))
    base = module.get_config(arg)
    variants = sweep.load_variants(module, arg)
    assert variants[0].name == 'c2d' and len(variants) >= 3
    for v in variants:
      config = sweep.variant_config(base, v)
      if arg == 'synthetic':
        assert config.data.name == 'synthetic_long_range/same_different'
        params, macs = sweep.model_cost(config)  # Every CPU-size variant builds and fits its input.
        assert params > 0 and macs > 0
      else:
        assert config.data.name == 'kinetics400' and config.model.depth == 50
      for key, value in v.overrides.items():
        sweep.format_flag(key, value)  # Every override can be printed as a main.py flag.


def test_errors_are_one_sentence(tmp_path):
  with pytest.raises(sweep.SweepError, match=r'cannot set config\.model\.no_such_field'):
    sweep.commands(SPEC, str(tmp_path), extra={'model.no_such_field': 1})
  with pytest.raises(sweep.SweepError, match='does not exist'):
    sweep.load_variants(sweep.load_module(str(tmp_path / 'missing.py')))
  with pytest.raises(ValueError, match='kinetics \\(default\\) or synthetic'):
    sweep.load_module(os.path.join(ROOT, 'configs', 'ablation_pairwise.py')).get_sweep('cifar')
  assert sweep.product([{'name': 'a', 'x.y': 1}, {'name': 'b', 'x.y': 2}], [{'name': 'c', 'x.z': 3}]) == [
      {'x.y': 1, 'x.z': 3, 'name': 'a,c', 'label': 'a, c'}, {'x.y': 2, 'x.z': 3, 'name': 'b,c', 'label': 'b, c'}]


def test_bad_seeds_are_one_sentence():
  with pytest.raises(sweep.SweepError, match='integers separated by commas'):
    sweep.check_seeds(['0', 'one'])
  with pytest.raises(sweep.SweepError, match='lists a seed twice'):
    sweep.check_seeds(['1', '1'])
  assert sweep.check_seeds([]) is None and sweep.check_seeds(['2', '0']) == (2, 0)


def test_overrides_of_any_depth_reach_the_config_and_the_flags():
  base = sweep.load_module(SPEC).get_config()
  variant = sweep.Variant('n12', 'n12', {'data.synthetic.num_train': 12, 'model.nonlocal_block.pairwise': 'gaussian'})
  config = sweep.variant_config(base, variant, {'train.num_steps': 3})
  assert config.data.synthetic.num_train == 12 and config.model.nonlocal_block.pairwise == 'gaussian'
  assert config.train.num_steps == 3 and base.data.synthetic.num_train != 12  # The base is left as it was.
  assert sweep.format_flag('data.synthetic.num_train', 12) == '--config.data.synthetic.num_train=12'
  with pytest.raises(sweep.SweepError, match=r'cannot set config\.data\.synthetic\.no_such_field'):
    sweep.variant_config(base, sweep.Variant('bad', 'bad', {'data.synthetic.no_such_field': 1}))
