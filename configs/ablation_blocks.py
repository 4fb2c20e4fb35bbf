r"""Table 2c, how many blocks: 0, 1, 5 or 10 embedded-Gaussian non-local blocks in C2D ResNet-50 (a sweep).

    python -m nonlocal_jax.sweep --config=configs/ablation_blocks.py --workdir=DIR --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_blocks.py:synthetic --workdir=/tmp/table2c

Argument: kinetics (default; paper R50: baseline 71.8, 1 block 72.7, 5 blocks 73.8, 10 blocks 74.3 top-1) or
synthetic (configs/synthetic_nl.py's network has one residual block in res2-res4 and two in res5: 0, 1 (res4),
2 (res3, res4) and 3 (res3, res4, and res5 between its two residual blocks) blocks).
"""

from nonlocal_jax.config_files import load_sibling



def get_config(arg=None):
  """The base of the sweep: C2D with 5 blocks (kinetics) or 2 blocks (synthetic)."""
  return load_sibling(__file__, 'ablation_common').get_base(arg, 'ablation_blocks', 'arch=c2d,blocks=5', 'res3res4')


def get_sweep(arg=None):
  """The C2D baseline and increasing numbers of blocks."""
  if load_sibling(__file__, 'ablation_common').scale_of(arg, 'ablation_blocks') == 'kinetics':
    counts = {'1': '1', '5': '5', '10': '10'}
  else:
    # The third block goes in res5 (before its last residual block), not res2: res2 is the best single stage
    # there (Table 2b), so adding it would measure the stage as much as the count, and its 6×6 map makes it the
    # most expensive block on a CPU.
    counts = {'1': 'res4:0', '2': 'res3:0;res4:0', '3': 'res3:0;res4:0;res5:0'}
  return ([{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'}]
          + [{'name': f'{n}_blocks', 'label': f'{n}-block' if n == '1' else f'{n}-blocks',
              'model.nonlocal_locations': where} for n, where in counts.items()])
