r"""Tables 2e/2f, non-local vs 3D convolution: C2D, I3D (3x1x1) and NL I3D (a sweep).

    python -m nonlocal_jax.sweep --config=configs/ablation_arch.py --workdir=DIR --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_arch.py:synthetic --workdir=/tmp/table2f

Argument: kinetics (default; R50, 5 blocks for the non-local models; paper 2f: C2D 71.8, I3D 73.3, NL I3D 74.9
top-1; 2e adds NL C2D 73.8) or synthetic (configs/synthetic_nl.py's network, blocks after res3 and res4,
every residual block inflated for I3D).
"""

from nonlocal_jax.config_files import load_sibling



def get_config(arg=None):
  """The base of the sweep: NL C2D with 5 blocks (kinetics) or 2 blocks (synthetic)."""
  return load_sibling(__file__, 'ablation_common').get_base(arg, 'ablation_arch', 'arch=c2d,blocks=5', 'res3res4')


def get_sweep(arg=None):
  """C2D, NL C2D, I3D and NL I3D."""
  scale = load_sibling(__file__, 'ablation_common').scale_of(arg, 'ablation_arch')
  i3d = {'model.temporal': 'i3d_3x1x1'}
  if scale == 'synthetic':
    i3d['model.temporal_pattern'] = ((1,), (1,), (1,), (1, 1))  # The official pattern is for R50's stages.
  return [{'name': 'c2d', 'label': 'C2D', 'model.nonlocal_locations': 'none'},
          {'name': 'nl_c2d', 'label': 'NL C2D'},
          {'name': 'i3d', 'label': 'I3D', 'model.nonlocal_locations': 'none', **i3d},
          {'name': 'nl_i3d', 'label': 'NL I3D', **i3d}]
