r"""Table 2b, which stage: one embedded-Gaussian non-local block in res2, res3, res4 or res5 (a sweep).

    python -m nonlocal_jax.sweep --config=configs/ablation_stage.py --workdir=DIR --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_stage.py:synthetic --workdir=/tmp/table2b

Argument: kinetics (default; R50 C2D, the block before the last residual block of the stage; paper: res2
72.7, res3 72.9, res4 72.7, res5 72.3 top-1) or synthetic (configs/synthetic_nl.py's network: one
residual block in res2-res4, which the block follows, and two in res5, between which it goes; res2's 6×6 map is
subsampled 2×2 as in the paper, the smaller maps are not).
"""

from nonlocal_jax.config_files import load_sibling



def get_config(arg=None):
  """The base of the sweep: C2D with one block in res4."""
  return load_sibling(__file__, 'ablation_common').get_base(arg, 'ablation_stage', 'arch=c2d,blocks=res4', 'res4')


def get_sweep(arg=None):
  """The C2D baseline and one block in each stage."""
  scale = load_sibling(__file__, 'ablation_common').scale_of(arg, 'ablation_stage')
  variants = [{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'}]
  for stage in ('res2', 'res3', 'res4', 'res5'):
    v = {'name': stage, 'label': stage,
         'model.nonlocal_locations': stage if scale == 'kinetics' else f'{stage}:0'}
    if scale == 'synthetic' and stage == 'res2':
      # The paper's 2×2 max pool of φ and g (docs/paper.md §2), which the synthetic base turns off because its
      # res3-res5 maps are 3×3 and smaller; res2's 6×6 map pools to 3×3 keys, a quarter of the pairwise cost.
      v['model.nonlocal_block.subsample'] = (1, 2, 2)
    if scale == 'synthetic' and stage == 'res5':
      v['model.nonlocal_block.subsample'] = (1, 1, 1)  # res5 is 1×1 there: nothing to pool.
    variants.append(v)
  return variants
