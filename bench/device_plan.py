"""What ``python -m bench.device`` measures, in which order, and the configs it builds for each piece: the
networks, the model and XLA variants a piece may name, the full plan for a device and the tiny one for a CPU.

The ahead-of-time compile benches (``bench.gpu_compile``, ``bench.tpu_compile``, ``bench.tree_reductions``) build
their networks here too, so that a compiled formulation is the one the device benchmark times.
"""

from __future__ import annotations

import os

from bench import nonlocal_block as block_bench
from nonlocal_jax import config_files
from nonlocal_jax.data import fake

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The dtypes of the matmul rates and of the networks' rows.
DTYPES = ('bfloat16', 'float32')
# (key, label, configs/benchmark.py argument, configs/test.py argument and temporal pattern for --tiny).
NETWORKS = (('c2d_nl', 'R50 C2D + 5 NL', 'frames=8x8', (None, 'c2d')),
            ('c2d', 'R50 C2D', 'frames=8x8,blocks=none', ('blocks=none', 'c2d')),
            ('i3d_nl', 'R50 I3D + 5 NL', 'arch=i3d,frames=8x8', (None, 'i3d_3x1x1')))
# What runs, most wanted first, so that a spent budget leaves the least wanted out. ('train', network, dtype, block
# implementation[, batch[, variant]]) is one train step, at the config's batch of 8 or the batch given, with the model's
# defaults or the ``VARIANTS`` that ``variant`` names ('conv=folded,pool=slices'); ('profile', ...) a profiler trace of
# that step; ('block', dtype, pairwise) the block at every shape; ('feed', clips, frames, crop) the training loop's
# host-to-device call on one uint8 batch (the Kinetics recipe's 64 clips of 32×224² a host). The first H200 lease
# measured the goal (bf16 C2D + 5 NL at >= 30 % of the bf16 matmul rate) with the defaults, the bf16 blocks (the
# 'auto' table and cuDNN), cuDNN attention in the network, 32 clips and a profile (a --resume run keeps them). That
# profile showed cuDNN converting every native 3D convolution between NCDHW and NDHWC (layout transposes 23 % of kernel
# time) and the max pools' select_and_scatter backward at 14 %, and its 'auto' rows ran res3's blocks chunked (a fixed
# 32 MiB affinity budget, now the device's). So next come the formulations compiled since with the lowest floors
# (bench.gpu_compile): 2D convolutions over the frames with max pools of strided slices, with the table's attention and
# with every block's attention 'lean', lean at 64 clips (whose compiled floor is 30 % of the matmul rate), and the
# profile of lean at 8 clips; then the bf16 blocks (their cases run again with 'lean', about two minutes, so that the
# table can rank it); then the rest of what the first lease ran; both formulations at 32 and 64 clips (does a larger
# batch fill the device better?); the host-to-device feed; the first lease's formulation with the device's budget;
# BatchNorm differentiated automatically; frozen BatchNorm (what its statistics cost a step); each change alone; I3D;
# channels-last native convolutions; the other bf16 networks; then float32 (what bf16 buys in a step, then in the
# block).
# Model settings that a plan entry's variant may change: its short name -> the config.model field ('norm=affine':
# frozen BatchNorm, which bench.gpu_compile uses to weigh what BatchNorm's statistics cost a step; 'bn=flax':
# BatchNorm differentiated automatically, against the written-out backward pass that 'auto' takes on a GPU).
VARIANTS = {'conv': 'conv_implementation', 'pool': 'pool_implementation', 'norm': 'norm', 'bn': 'bn_implementation'}
# XLA options a variant may set for the step's compilation ('xla=nhwc'): XLA's GPU layout assignment hands cuDNN
# 3D convolutions channels-first on Hopper; this forces channels-last for every convolution (users set it with
# XLA_FLAGS=--xla_gpu_force_conv_nhwc=true), against folding the frames into 2D convolutions.
XLA_VARIANTS = {'nhwc': {'xla_gpu_force_conv_nhwc': True}}
_BOTH = 'conv=folded,pool=slices'
_BF16_FIRST = [('train', 'c2d_nl', 'bfloat16', 'auto'),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, _BOTH),
               ('train', 'c2d_nl', 'bfloat16', 'lean', None, _BOTH),
               ('train', 'c2d_nl', 'bfloat16', 'lean', 64, _BOTH),
               ('profile', 'c2d_nl', 'bfloat16', 'lean', None, _BOTH),
               ('block', 'bfloat16', 'embedded_gaussian'), ('block', 'bfloat16', 'dot_product'),
               ('train', 'c2d_nl', 'bfloat16', 'cudnn'), ('train', 'c2d_nl', 'bfloat16', 'auto', 32),
               ('profile', 'c2d_nl', 'bfloat16', 'auto'), ('train', 'c2d_nl', 'bfloat16', 'auto', 32, _BOTH),
               ('train', 'c2d_nl', 'bfloat16', 'auto', 64, _BOTH), ('feed', 64, 32, 224),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, 'conv=native,pool=window'),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, _BOTH + ',bn=flax'),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, _BOTH + ',norm=affine'),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, 'conv=folded'),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, 'pool=slices'),
               ('train', 'i3d_nl', 'bfloat16', 'auto', None, _BOTH),
               ('train', 'i3d_nl', 'bfloat16', 'auto', None, 'conv=native,pool=slices,xla=nhwc'),
               ('train', 'c2d_nl', 'bfloat16', 'auto', None, 'conv=native,pool=slices,xla=nhwc'),
               ('train', 'c2d', 'bfloat16', 'auto'), ('train', 'i3d_nl', 'bfloat16', 'auto'),
               ('train', 'c2d_nl', 'float32', 'auto'), ('train', 'c2d', 'float32', 'auto'),
               ('train', 'i3d_nl', 'float32', 'auto'),
               ('block', 'float32', 'embedded_gaussian'), ('block', 'float32', 'dot_product')]
FULL = dict(matmul=8192, copy_mib=2048, profile_steps=5,
            block_shapes={k: block_bench.SHAPES[k] for k in ('res3', 'res4', 'clip8', 'clip16')},
            block_batch=8, train_steps=20, plan=_BF16_FIRST)
# Every code path once, at a fraction of the compilations (a train step's is most of the run's time).
TINY = dict(matmul=256, copy_mib=4, profile_steps=2, block_shapes={'res3': (2, 8, 8, 32)}, block_batch=2, train_steps=2,
            plan=[('train', 'c2d_nl', 'bfloat16', 'auto', 4, 'conv=folded,pool=window'),
                  ('block', 'bfloat16', 'embedded_gaussian'), ('block', 'float32', 'dot_product'),
                  ('profile', 'c2d_nl', 'bfloat16', 'auto', 4, 'conv=folded,pool=window'), ('feed', 4, 2, 16)])
# Each network's label in the reports.
LABELS = {key: label for key, label, *_ in NETWORKS}


def network_config(key, dtype, tiny, implementation='auto', batch=None, variant=''):
  """The fake-data config of one network: configs/benchmark.py's (8×224², batch 8), or configs/test.py's tiny one;
  its non-local blocks computed by ``implementation``, at ``batch`` clips if given, with the model settings that
  ``variant`` names ('conv=folded,pool=slices'; see ``VARIANTS``)."""
  _, _, arg, (test_arg, temporal) = next(n for n in NETWORKS if n[0] == key)
  if tiny:
    config = config_files.load_module(os.path.join(ROOT, 'configs', 'test.py')).get_config(test_arg)
    config.data.name, config.model.temporal = fake.NAME, temporal
  else:
    config = config_files.load_module(os.path.join(ROOT, 'configs', 'benchmark.py')).get_config(arg)
  config.model.dtype = dtype
  config.model.nonlocal_block.implementation = implementation
  if batch:
    config.data.global_batch_size = config.train.base_batch_size = batch
  for name, value in _settings(variant):
    if name in VARIANTS:
      config.model[VARIANTS[name]] = value
  return config


def _settings(variant):
  """[(name, value)] of a variant 'conv=folded,pool=slices,xla=nhwc', each checked."""
  out = []
  for setting in filter(None, (variant or '').split(',')):
    name, _, value = setting.partition('=')
    if not value or (name not in VARIANTS and not (name == 'xla' and value in XLA_VARIANTS)):
      raise ValueError(f'variant {variant!r}: each setting is NAME=VALUE with NAME one of '
                       f"{tuple(VARIANTS) + ('xla',)} (xla: one of {tuple(XLA_VARIANTS)}).")
    out.append((name, value))
  return out


def compiler_options(variant) -> dict:
  """The XLA options of a variant's compilation ({} for none)."""
  options = {}
  for name, value in _settings(variant):
    if name == 'xla':
      options.update(XLA_VARIANTS[value])
  return options


def feed_name(clips, frames, crop):
  """A feed piece's name: 'feed 64×32×224²'."""
  return f'feed {clips}×{frames}×{crop}²'


def settings_label(variant, attention) -> str:
  """A step's settings in one label: the variant, then the blocks' attention path unless 'auto'
  ('conv=folded,pool=slices,attention=lean'; '' for the defaults)."""
  return ','.join(filter(None, [variant, f'attention={attention}' if attention != 'auto' else '']))


def piece_name(kind, key_or_dtype, *rest):
  """A train or profile piece's name: 'train c2d_nl bfloat16 auto' (+ ' batch 32', + ' conv=folded')."""
  dtype, implementation, batch, variant = (*rest, None, None)[:4]
  return (f'{kind} {key_or_dtype} {dtype} {implementation}' + (f' batch {batch}' if batch else '') +
          (f' {variant}' if variant else ''))
