r"""Baseline video networks on Kinetics-400 without non-local blocks: the network and its clip sampling.

Default: C2D ResNet-50, 32x2 clips (71.8 top-1 in the paper, Table 2c), trained with the recipe of
``configs/kinetics_nl.py``. Takes the arguments of ``configs/kinetics_nl.py``, with blocks=none unless given:

    python main.py --config=configs/kinetics_c2d.py --workdir=/tmp/kinetics_c2d

    python -m nonlocal_jax.models.summary --config=configs/kinetics_c2d.py
    python -m nonlocal_jax.models.summary --config=configs/kinetics_c2d.py:arch=i3d,depth=101,frames=8x8

Expected result and time: NOT run here (no Kinetics copy, no GPUs); the target is the paper's 71.8 top-1 / 89.7
top-5 (Table 2c).
"""

from nonlocal_jax.config_files import load_sibling



def get_config(arg=None):
  """C2D (or, with arch=i3d, I3D) without non-local blocks; ``arg`` as in configs/kinetics_nl.py."""
  return load_sibling(__file__, 'kinetics_nl').get_config('arch=c2d,blocks=none,' + (arg or ''))
