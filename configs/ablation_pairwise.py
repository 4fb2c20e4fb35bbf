r"""Table 2a, the pairwise function: C2D ResNet-50 + 1 non-local block in res4, vs the C2D baseline (a sweep).

    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py --workdir=DIR --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a

Argument: kinetics (default; R50, 32x2 clips, the recipe of configs/kinetics_nl.py; paper: baseline 71.8,
Gaussian 72.5, embedded Gaussian 72.7, dot product 72.9, concatenation 72.8 top-1) or synthetic (the tiny
network of configs/synthetic_nl.py with one block after res4, on synthetic_long_range/same_different).
Expected at CPU size: see the README's Results section (measured on a 2-core CPU).
"""

from nonlocal_jax.config_files import load_sibling
from nonlocal_jax.layers import PAIRWISE



def get_config(arg=None):
  """The base of the sweep: the embedded-Gaussian model with one block in res4."""
  return load_sibling(__file__, 'ablation_common').get_base(arg, 'ablation_pairwise', 'arch=c2d,blocks=1', 'res4')


def get_sweep(arg=None):
  """The C2D baseline and the four pairwise functions (docs/paper.md §1)."""
  load_sibling(__file__, 'ablation_common').scale_of(arg, 'ablation_pairwise')
  return ([{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'}]
          + [{'name': p, 'label': f.label, 'model.nonlocal_block.pairwise': p} for p, f in PAIRWISE.items()])
