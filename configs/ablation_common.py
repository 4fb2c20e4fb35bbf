"""What the ablation sweep configs (configs/ablation_*.py, the paper's Table 2) share: the two scales.

``get_base(arg, kinetics_variant, synthetic_blocks)``: the config every variant of a sweep starts from, at full
size on Kinetics-400 (``configs/kinetics_nl.py``, arg None or 'kinetics') or at CPU size on the synthetic
long-range benchmark (``configs/synthetic_nl.py``, arg 'synthetic'). Not a config itself (no get_config).
"""

from nonlocal_jax.config_files import load_sibling

SCALES = ('kinetics', 'synthetic')



def scale_of(arg, config_name):
  """'kinetics' (arg None or 'kinetics') or 'synthetic'; anything else fails naming the allowed arguments."""
  scale = arg or 'kinetics'
  if scale not in SCALES:
    raise ValueError(f'configs/{config_name}.py takes the argument kinetics (default) or synthetic, got {arg!r}.')
  return scale


def get_base(arg, config_name, kinetics_variant, synthetic_blocks):
  """The sweep's base config at the scale named by ``arg``; variants override config.model fields."""
  if scale_of(arg, config_name) == 'kinetics':
    return load_sibling(__file__, 'kinetics_nl').get_config(kinetics_variant)
  return load_sibling(__file__, 'synthetic_nl').get_config(f'blocks={synthetic_blocks}')
