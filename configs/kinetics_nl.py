r"""Non-local video networks on Kinetics-400 (Wang et al. 2018, docs/paper.md §3-§4): the network, clip sampling.

Default: NL C2D ResNet-50, 32x2 clips, 5 embedded-Gaussian non-local blocks (res3 1, 3; res4 1, 3, 5), the
paper's Table 2c model (73.8 top-1 in the paper, vs 71.8 for the C2D baseline), trained with the paper's recipe
(docs/paper.md §5; ``config.train``): 400k steps of 64 clips, SGD + Nesterov momentum 0.9, lr 0.01 ÷10 at 150k and
300k, weight decay 1e-4 (not on BN and biases), dropout 0.5, precise BN over 200 batches; tested with 10 clips ×
3 crops of 256. ``arch=i3d`` is the Table 2f NL I3D (74.9).

    python main.py --config=configs/kinetics_nl.py --workdir=/tmp/kinetics_nl            # trains; rerun resumes
    python main.py --config=configs/kinetics_nl.py --workdir=/tmp/kinetics_nl --mode=eval
    python main.py --config=configs/kinetics_nl.py --workdir=/tmp/kinetics_nl \
        --config.train.init_checkpoint=/tmp/kinetics_c2d     # start from the C2D baseline's weights
    python -m nonlocal_jax.models.summary --config=configs/kinetics_nl.py

Needs Kinetics-400 prepared from local videos (``python -m nonlocal_jax.data.prepare kinetics400 ...``). Expected
result and time: NOT run here (no Kinetics copy, no GPUs in this project's machines); the target is the paper's
73.8 top-1 (Table 2c; 8 GPUs × 8 clips in the paper). With fewer than 8 devices
keep 64 clips per update with ``--config.train.accumulation_steps`` (e.g. 8 on one GPU).
    python -m nonlocal_jax.models.summary \
        --config=configs/kinetics_nl.py:arch=i3d,depth=101,blocks=5,pairwise=dot_product,frames=8x8

The optional argument names a variant, as comma-separated key=value pairs:

    arch       c2d | i3d (I3D 3x1x1, the official NL I3D) | i3d_3x3x3
    depth      50 | 101
    blocks     none | 1 | 5 | 10 | res2 | res3 | res4 | res5 (placement presets, docs/paper.md §3)
    pairwise   gaussian | embedded_gaussian | dot_product | concatenation
    positions  spacetime | space | time (time-only blocks do not subsample: they attend over 4 frames)
    block      nonlocal | gc | apnb | cc | cgnl | a2: the block placed where `blocks` says (README "Non-local
               family"), with its own defaults; pairwise and positions are options of the non-local block only
    frames     32x2 | 8x8: the official models' stem and the clip sampling (32 frames every 2nd, or 8 every 8th)
"""

from nonlocal_jax.config_files import load_sibling, parse_arg
from nonlocal_jax.layers import BLOCK_KINDS, PAIRWISE_FUNCTIONS, POSITION_SETS
from nonlocal_jax.models import NONLOCAL_PRESETS
from nonlocal_jax.models.registry import nonlocal_block_config

VARIANT_KEYS = {
    'arch': {'c2d': 'c2d', 'i3d': 'i3d_3x1x1', 'i3d_3x1x1': 'i3d_3x1x1', 'i3d_3x3x3': 'i3d_3x3x3'},
    'depth': {'50': 50, '101': 101},
    'blocks': {b: b for b in NONLOCAL_PRESETS},
    'pairwise': {p: p for p in PAIRWISE_FUNCTIONS},
    'positions': {p: p for p in POSITION_SETS},
    'frames': {'32x2': '32x2', '8x8': '8x8'},
    'block': {k: k for k in BLOCK_KINDS},
}
# Variant keys that set options of the non-local block itself (kind 'nonlocal').
_NONLOCAL_ONLY = ('pairwise', 'positions')
# Frames per clip and stride between them (config.data) for each stem.
_SAMPLING = {'32x2': (32, 2), '8x8': (8, 8)}
# Which config.model field each variant key sets (dotted: inside config.model.nonlocal_block).
_FIELDS = {'arch': 'temporal', 'depth': 'depth', 'blocks': 'nonlocal_locations', 'pairwise': 'nonlocal_block.pairwise',
           'positions': 'nonlocal_block.positions', 'frames': 'stem'}
DEFAULT_VARIANT = 'arch=c2d,depth=50,blocks=5,pairwise=embedded_gaussian,frames=32x2'


def parse_variant(arg):
  """'arch=i3d,blocks=5' -> {'arch': 'i3d_3x1x1', 'blocks': '5'}; an unknown key or value names the allowed ones."""
  return parse_arg(arg, VARIANT_KEYS, 'configs/kinetics_nl.py')


def get_config(arg=None):
  """The default config with the model section set for the named variant (``DEFAULT_VARIANT`` overridden by arg)."""
  config = load_sibling(__file__, 'default').get_config()
  variant = parse_variant(DEFAULT_VARIANT)
  given = parse_variant(arg)
  variant.update(given)
  kind = variant.pop('block', 'nonlocal')
  if kind != 'nonlocal':
    for key in _NONLOCAL_ONLY:
      if key in given:
        raise ValueError(f'configs/kinetics_nl.py argument {key}= sets an option of the non-local block; drop it '
                         f'or use block=nonlocal (got block={kind}).')
      variant.pop(key, None)
    config.model.nonlocal_block = nonlocal_block_config('resnet_video', kind)
  for key, value in variant.items():
    section, _, field = _FIELDS[key].rpartition('.')
    (config.model[section] if section else config.model)[field] = value
  config.data.num_frames, config.data.frame_stride = _SAMPLING[variant['frames']]
  if kind == 'nonlocal' and variant.get('positions') == 'time':
    config.model.nonlocal_block.subsample = None
  config.train.precise_bn_batches = 200  # Official TEST.PRECISE_BN (200 iterations).
  config.train.log_every_steps, config.train.checkpoint_every_steps = 100, 5000
  return config
