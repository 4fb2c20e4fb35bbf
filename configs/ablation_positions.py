r"""Table 2d, space vs time vs spacetime: where each non-local block's positions j range (a sweep).

    python -m nonlocal_jax.sweep --config=configs/ablation_positions.py --workdir=DIR --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_positions.py:synthetic --workdir=/tmp/table2d

Argument: kinetics (default; R50 C2D + 5 blocks; paper: space-only 72.9, time-only 73.1, spacetime 73.8 top-1)
or synthetic (configs/synthetic_nl.py's network, blocks after res3 and res4). Time-only blocks are not
subsampled (their keys are the frames of one spatial location), as in configs/kinetics_nl.py.
"""

from nonlocal_jax.config_files import load_sibling



def get_config(arg=None):
  """The base of the sweep: C2D with 5 blocks (kinetics) or 2 blocks (synthetic), spacetime."""
  return load_sibling(__file__, 'ablation_common').get_base(arg, 'ablation_positions', 'arch=c2d,blocks=5', 'res3res4')


def get_sweep(arg=None):
  """The C2D baseline, then space-only, time-only and spacetime blocks."""
  load_sibling(__file__, 'ablation_common').scale_of(arg, 'ablation_positions')
  return [{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'},
          {'name': 'space', 'label': 'space-only', 'model.nonlocal_block.positions': 'space'},
          # A (1, 1, 1) window is no pooling, and unlike None it can be written as a main.py flag.
          {'name': 'time', 'label': 'time-only', 'model.nonlocal_block.positions': 'time',
           'model.nonlocal_block.subsample': (1, 1, 1)},
          {'name': 'spacetime', 'label': 'spacetime', 'model.nonlocal_block.positions': 'spacetime'}]
