"""Video ResNets of the paper: C2D and I3D ResNet-50/101, with non-local blocks (docs/paper.md §3, Table 1).

Input clips are channels-last, (B, T, H, W, C) with C = 3 for RGB; the output is (B, num_classes) float32 logits,
or in fully-convolutional test mode the softmax (multi-label: per-class sigmoids) averaged over positions:

    model = ResNetVideo(depth=50, temporal='i3d_3x1x1', nonlocal_locations='5',
                        nonlocal_block={'pairwise': 'embedded_gaussian'})
    variables = model.init(jax.random.key(0), clips, train=False)
    logits, updates = model.apply(variables, clips, train=True, mutable=['batch_stats'],
                                  rngs={'dropout': key})
    scores = model.apply(variables, clips, train=False, fully_convolutional=True)

Parameter names (stable; one-to-one with the official Caffe2 blobs, see ``nonlocal_jax.models.naming``):

    conv1/kernel                         (kT, 7, 7, C_in, width)      conv1_w
    res_conv1_bn/{scale,bias}            batch_stats: {mean,var}      res_conv1_bn_{s,b,rm,riv}
    res{k}_{i}/branch2{a,b,c}/kernel     residual branch convs         res{k}_{i}_branch2{a,b,c}_w
    res{k}_{i}/branch2{a,b,c}_bn/...     their BatchNorms              res{k}_{i}_branch2{a,b,c}_bn_*
    res{k}_0/branch1/kernel, branch1_bn  projection shortcut           res{k}_0_branch1_w, ..._bn_*
    nonlocal_conv{k}_{i}/{theta,phi,g,out}/{kernel,bias}, bn/...       nonlocal_conv{k}_{i}_*
    pred/{kernel,bias}                   (2048, num_classes)           pred_w (transposed), pred_b

k = 2..5 is the stage and i the 0-based residual block; a non-local block takes the name of the residual block
it follows. Convolution kernels are (kT, kH, kW, C_in, C_out), the transpose of Caffe2's (C_out, C_in, kT, kH,
kW). With norm='affine' the BatchNorms are replaced by a frozen per-channel ``Affine`` with the same scale/bias
names and no batch_stats. The stage outputs are sown as 'intermediates' (``conv1_out``, ``pool1_out``,
``res2_out``, ``pool2_out``, ``res3_out`` .. ``res5_out``, ``pool5_out``) when that collection is mutable.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn

from nonlocal_jax.layers import pooling
from nonlocal_jax.models import blocks
from nonlocal_jax.models.base import ResNetBase, check_one_of, probabilities_over_positions
from nonlocal_jax.models.placement import R101_STAGES, R50_STAGES

TEMPORAL = ('c2d', 'i3d_3x1x1', 'i3d_3x3x3')
DEPTHS = {50: R50_STAGES, 101: R101_STAGES}


class StemSpec(NamedTuple):
  """conv1 stride and the pool1 / pool2 max pools (window, strides, (lo, hi) padding per axis) of a stem."""
  conv1_strides: Tuple[int, int, int]
  pool1_window: Tuple[int, int, int]
  pool1_strides: Tuple[int, int, int]
  pool1_padding: Tuple[Tuple[int, int], ...]
  pool2_window: Tuple[int, int, int]
  pool2_strides: Tuple[int, int, int]
  pool2_padding: Tuple[Tuple[int, int], ...]


_NO_PAD = ((0, 0), (0, 0), (0, 0))
_SPATIAL_PAD = ((0, 0), (1, 1), (1, 1))  # PySlowFast's stem pool padding; the official code pads by 0.
STEMS = {
    # Official 32x2 models (resnet_video_org.py): 32 frames -> 16 -> 8 -> 4.
    '32x2': StemSpec((2, 2, 2), (2, 3, 3), (2, 2, 2), _SPATIAL_PAD, (2, 1, 1), (2, 1, 1), _NO_PAD),
    # Official 8x8 models (resnet_video.py): 8 frames -> 8 -> 8 -> 4.
    '8x8': StemSpec((1, 2, 2), (1, 3, 3), (1, 2, 2), _SPATIAL_PAD, (2, 1, 1), (2, 1, 1), _NO_PAD),
    # The paper's Table 1: 3x3x3 and 3x1x1 pools with stride 2 (padded so 32 -> 16 -> 8 -> 4 as in the table).
    'table1': StemSpec((2, 2, 2), (3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1)), (3, 1, 1), (2, 1, 1),
                       ((1, 1), (0, 0), (0, 0))),
}


def formulation_network(temporal: str) -> str:
  """The kind of network whose formulations a device table measures for this ``temporal`` setting: 'c2d', or
  'i3d' for the inflated ones (their temporal kernels are what folding costs more for)."""
  return 'c2d' if temporal == 'c2d' else 'i3d'


def official_temporal_pattern(stage_sizes: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
  """Which residual blocks of an I3D network have a temporal kernel (official ``use_temp_convs``).

  R50: res2 [1,1,1], res3 [1,0,1,0], res4 [1,0,1,0,1,0], res5 [0,1,0]; R101 likewise with res4 alternating
  1, 0, ... over its 23 blocks. Other stage sizes follow the same rule: every block of res2, every other block
  of res3 and res4 starting with the first, every other block of res5 starting with the second.
  """
  sizes = tuple(int(n) for n in stage_sizes)
  pattern = []
  for k, n in enumerate(sizes):
    if k == 0:
      pattern.append((1,) * n)
    elif k == len(sizes) - 1:
      pattern.append(tuple(i % 2 for i in range(n)))
    else:
      pattern.append(tuple(1 - i % 2 for i in range(n)))
  return tuple(pattern)


class ResNetVideo(ResNetBase):
  """C2D / I3D ResNet for video clips (B, T, H, W, C), with optional non-local blocks (Wang et al. 2018).

  Attributes:
    num_classes: classifier outputs (400 for Kinetics-400).
    depth: 50 or 101; sets stage_sizes (3, 4, 6, 3) or (3, 4, 23, 3) unless stage_sizes is given.
    stage_sizes: residual blocks in res2 .. res5; overrides depth (tiny networks for tests and demos).
    width: channels of conv1 and of res2's bottleneck (64); stage k has bottleneck width·2^(k-2) and output
      4·width·2^(k-2).
    temporal: 'c2d' (every kernel 1×k×k), 'i3d_3x1x1' (inflate branch2a to 3×1×1: the official NL I3D) or
      'i3d_3x3x3' (inflate the 3×3 of branch2b to 3×3×3); I3D also makes conv1 5×7×7.
    temporal_pattern: per stage, 1 for the residual blocks that get the temporal kernel; None for the official
      pattern (``official_temporal_pattern``).
    stem: '32x2' or '8x8' (the official models' conv1 stride and pool1/pool2) or 'table1' (the paper's Table 1
      pools).
    stem_pool_padding: spatial padding of the 32x2 / 8x8 stem max pool (pool1): 1 as PySlowFast (default,
      docs/paper.md §3), or 0 as the official Caffe2 code, which makes converted official checkpoints compute
      exactly the official function (224 input: res2 is 55×55 instead of 56×56). 'table1' always pads by 1.
    stride_in_1x1: stride res3..res5 on branch2a (original MSRA ResNet, which matches the paper's 34.2 GFLOPs
      for R101) instead of branch2b (official video code; default).
    nonlocal_locations: where the non-local blocks go: a preset ('none', '1', '5', '10', 'res2' .. 'res5') or a
      per-stage placement (see ``nonlocal_jax.models.placement``).
    nonlocal_block: the options of every non-local block, a mapping whose keys are ``NonLocalBlock``'s fields
      (pairwise, subsample, positions, ...; see ``nonlocal_jax.layers.NonLocalBlock``), over the video default
      subsample (1, 2, 2), or ``kind`` and another family block's fields (``nonlocal_jax.layers.family``,
      docs/family.md); the network sets the block's dtype and BatchNorm settings, and its norm when the
      spec leaves it None ('batch', or 'affine' for a frozen-BN network).
    nonlocal_res3_temporal_groups: attend inside groups of this many frames in the res3 blocks only (the official
      grouped non-local of the frozen-BN 128-frame models); None for no grouping there.
    norm: 'batch' (BatchNorm, statistics per device unless bn_axis_name is set) or 'affine' (frozen BN: a
      fixed per-channel affine transform, as the official 128-frame models).
    bn_axis_name: mapped axis name over which BatchNorm statistics are averaged (synchronised BN); None keeps
      them per device, as the paper.
    bn_momentum: BatchNorm running-average momentum (official 0.9).
    bn_epsilon: BatchNorm epsilon (official 1e-5).
    residual_bn_init: initial γ of the last BN of each residual branch (official BN_INIT_GAMMA, 1).
    dropout_rate: dropout before the classifier (0.5).
    conv_implementation: 'auto', 'native' (3D convolutions) or 'folded' (2D convolutions with time folded into
      the batch: the same function, several times faster on XLA:CPU). 'auto' takes what the device's measured
      table names (``layers.attention_auto.measured_formulation``), else 'folded' on CPU and 'native' elsewhere.
    pool_implementation: how every max pool runs (the stem's and the non-local blocks' subsampling): 'auto'
      (the device table's choice, else 'window'), 'window' (XLA's reduce_window) or 'slices' (strided slices:
      the same values, a backward pass without scatter; see ``nonlocal_jax.layers.pooling``).
    bn_implementation: whose backward pass the residual network's BatchNorms have: 'auto' ('fused' on a GPU
      with per-device statistics, else 'flax'), 'flax' (``nn.BatchNorm``, differentiated automatically) or
      'fused' (the same values, the backward pass written out in fewer passes; ``nonlocal_jax.layers.batch_norm``).
    head_window: spatial window (H, W) of the average pool in fully-convolutional mode, the res5 map of a
      training crop (7, 7) as in the official test net; None applies the classifier at every res5 position.
    remat: what the backward pass recomputes instead of keeping from the forward pass, to fit long clips
      (e.g. 128 frames) in memory: 'none' (keep everything), 'nonlocal' (each non-local block keeps only its
      input: its θ/φ/g maps, attention and BN activations are recomputed), 'stages' (likewise each residual
      block) or 'all' (both). The parameters, outputs and gradients are those of 'none'; the cost is about one
      more forward pass of the rematerialised blocks (bench/nonlocal_block.py measures the memory).
    dtype: compute dtype (jnp.float32 or jnp.bfloat16); parameters stay float32, logits are float32.
  """
  num_classes: int = 400
  width: Optional[int] = 64
  temporal: str = 'c2d'
  temporal_pattern: Optional[Sequence[Sequence[int]]] = None
  stem: str = '32x2'
  stem_pool_padding: int = 1
  nonlocal_res3_temporal_groups: Optional[int] = None
  head_window: Optional[Sequence[int]] = (7, 7)

  NONLOCAL_DEFAULTS = {'subsample': (1, 2, 2)}
  NONLOCAL_RANK = 3

  @nn.nowrap
  def formulation_network(self) -> str:
    """'c2d' or 'i3d': whose measured convolution and pool formulations 'auto' takes (see ResNetBase)."""
    return formulation_network(self.temporal)

  @nn.nowrap
  def stem_spec(self) -> StemSpec:
    """The stem's strides and pools, with the spatial padding of pool1 set by ``stem_pool_padding``."""
    stem = STEMS[self.stem]
    if self.stem == 'table1':
      return stem
    if self.stem_pool_padding not in (0, 1):
      raise ValueError(f'stem_pool_padding must be 0 (official Caffe2) or 1 (PySlowFast), got '
                       f'{self.stem_pool_padding!r}.')
    pad = (self.stem_pool_padding,) * 2
    return stem._replace(pool1_padding=(stem.pool1_padding[0], pad, pad))

  @nn.nowrap
  def resolved_stage_sizes(self) -> Tuple[int, ...]:
    """Residual blocks per stage (res2 .. res5)."""
    if self.stage_sizes is not None:
      return tuple(int(n) for n in self.stage_sizes)
    if self.depth not in DEPTHS:
      raise ValueError(f'depth must be one of {tuple(DEPTHS)} (or give stage_sizes), got {self.depth!r}.')
    return DEPTHS[self.depth]

  @nn.nowrap
  def resolved_width(self) -> int:
    """Channels of conv1 and of res2's bottleneck."""
    return int(self.width) if self.width is not None else 64

  @nn.nowrap
  def resolved_temporal_pattern(self) -> Tuple[Tuple[int, ...], ...]:
    """Per stage, 1 for residual blocks with a temporal kernel (all 0 for C2D)."""
    sizes = self.resolved_stage_sizes()
    if self.temporal == 'c2d':
      return tuple((0,) * n for n in sizes)
    if self.temporal_pattern is None:
      return official_temporal_pattern(sizes)
    pattern = tuple(tuple(int(b) for b in stage) for stage in self.temporal_pattern)
    if tuple(len(p) for p in pattern) != sizes or any(b not in (0, 1) for p in pattern for b in p):
      raise ValueError(f'temporal_pattern must hold one 0/1 entry per residual block, {sizes} per stage; got '
                       f'{self.temporal_pattern!r}.')
    return pattern

  @nn.nowrap
  def check(self) -> None:
    """Validates the fields (build_model calls this); each error names the config field to fix."""
    if len(self.resolved_stage_sizes()) != 4:
      raise ValueError(f'stage_sizes must give 4 stages (res2 .. res5), got {self.stage_sizes!r}.')
    self._check_common()
    check_one_of('temporal', self.temporal, TEMPORAL)
    check_one_of('stem', self.stem, tuple(STEMS))
    groups = self.nonlocal_res3_temporal_groups
    if groups is not None:
      if not isinstance(groups, int) or groups < 1:
        raise ValueError(f'nonlocal_res3_temporal_groups must be a positive integer or None, got {groups!r}.')
      try:
        self.check_nonlocal_block(temporal_groups=groups)
      except ValueError as e:
        raise ValueError(f'nonlocal_res3_temporal_groups={groups} does not fit the block spec: {e}') from None
    if self.head_window is not None and (len(tuple(self.head_window)) != 2 or
                                         any(not isinstance(w, int) or w < 1 for w in self.head_window)):
      raise ValueError(f'head_window must be an (H, W) window such as (7, 7), or None; got {self.head_window!r}.')
    self.resolved_temporal_pattern()

  @nn.nowrap
  def feature_sizes(self, input_shape: Sequence[int]) -> dict:
    """Feature-map sizes (T, H, W) after each layer of Table 1 for a clip of size (T, H, W), without tracing.

    Keys: 'input', 'conv1', 'pool1', 'res2', 'pool2', 'res3', 'res4', 'res5'. Sizes may be < 1 for inputs
    that are too small; ``check_input`` turns that into a clear error.
    """
    stem = self.stem_spec()
    size = tuple(int(s) for s in input_shape)
    t_kernel = 5 if self.temporal != 'c2d' else 1
    conv1 = tuple(blocks.conv_output_size(n, k, s, k // 2, k // 2)
                  for n, k, s in zip(size, (t_kernel, 7, 7), stem.conv1_strides))
    pool1 = tuple(blocks.conv_output_size(n, k, s, *p)
                  for n, k, s, p in zip(conv1, stem.pool1_window, stem.pool1_strides, stem.pool1_padding))
    pool2 = tuple(blocks.conv_output_size(n, k, s, *p)
                  for n, k, s, p in zip(pool1, stem.pool2_window, stem.pool2_strides, stem.pool2_padding))
    out = {'input': size, 'conv1': conv1, 'pool1': pool1, 'res2': pool1, 'pool2': pool2}
    t, h, w = pool2
    for k in (3, 4, 5):
      h, w = blocks.conv_output_size(h, 1, 2, 0, 0), blocks.conv_output_size(w, 1, 2, 0, 0)
      out[f'res{k}'] = (t, h, w)
    return out

  @nn.nowrap
  def _input_problem(self, size: Sequence[int]) -> Optional[str]:
    """Why a clip of size (T, H, W) does not fit the network, or None if it does."""
    sizes = self.feature_sizes(size)
    for layer, shape in sizes.items():
      for axis, n in zip('THW', shape):
        if n < 1:
          return f'its {axis} axis shrinks to nothing at {layer}'
    window = self.nonlocal_kwargs().get('subsample') or (1, 1, 1)
    for k, indices in zip((2, 3, 4, 5), self.placement()):
      if indices and any(s < w for s, w in zip(sizes[f'res{k}'], window)):
        return (f'the non-local blocks of res{k} subsample with window {window} but res{k} is only '
                f'{"×".join(map(str, sizes[f"res{k}"]))}')
    spec_groups = self.nonlocal_kwargs().get('temporal_groups')
    for k, indices in zip((2, 3, 4, 5), self.placement()):
      res3_groups = self.nonlocal_res3_temporal_groups if k == 3 else None
      groups, field = (res3_groups, 'nonlocal_res3_temporal_groups') if res3_groups else (
          spec_groups, 'nonlocal_block.temporal_groups')
      if indices and groups and sizes[f'res{k}'][0] % groups:
        return f'res{k} has {sizes[f"res{k}"][0]} frames, which {field}={groups} does not divide'
    return None

  @nn.nowrap
  def check_input(self, shape: Sequence[int]) -> None:
    """Raises a ValueError saying what size to use when a (B, T, H, W, C) input does not fit the network."""
    if len(shape) != 5:
      raise ValueError(f'ResNetVideo expects channels-last clips (B, T, H, W, C); got an input of shape '
                       f'{tuple(shape)}. Add the missing axes (e.g. x[None] for a single clip).')
    size = tuple(shape[1:4])
    problem = self._input_problem(size)
    if problem is None:
      return
    minimum = []
    for axis in range(3):
      # The smallest size along this axis that works when the other two are ample.
      n = next((n for n in range(1, 4097)
                if self._input_problem([n if a == axis else 1024 for a in range(3)]) is None), 4096)
      minimum.append(n)
    hint = (f' and a number of frames that gives res3 a multiple of {self.nonlocal_res3_temporal_groups} frames'
            if self.nonlocal_res3_temporal_groups else '')
    raise ValueError(f'Input clips of T×H×W = {"×".join(map(str, size))} do not fit this network (stem '
                     f'{self.stem!r}, {self.temporal}): {problem}. Use clips of at least '
                     f'{"×".join(map(str, minimum))}{hint}.')

  @nn.compact
  def __call__(self, x, train: bool = False, fully_convolutional: bool = False, multi_label: bool = False):
    """Classifies clips.

    Args:
      x: (B, T, H, W, C) clips.
      train: use batch statistics and update the running averages (pass mutable=['batch_stats']), and apply
        dropout (pass rngs={'dropout': key}).
      fully_convolutional: the official test protocol: average-pool res5 with window (T, *head_window) and
        stride 1, apply the classifier at every position, and average the softmax over positions.
      multi_label: in fully-convolutional mode, average per-class sigmoids instead of the softmax (a multi-label
        dataset's probabilities, as PySlowFast's head applies its activation before averaging).

    Returns:
      (B, num_classes) float32 logits; in fully-convolutional mode, the averaged softmax probabilities.
    """
    self.check()
    self.check_input(x.shape)
    stem = self.stem_spec()
    conv, norm = self._conv(), self._norm(train)
    width = self.resolved_width()
    pattern = self.resolved_temporal_pattern()
    placement = self.placement()
    i3d = self.temporal != 'c2d'

    x = x.astype(self.dtype)
    x = conv(width, (5 if i3d else 1, 7, 7), stem.conv1_strides, name='conv1')(x)
    x = norm(name='res_conv1_bn', relu=True)(x)
    self.sow('intermediates', 'conv1_out', x)
    pools = self._pool_implementation()
    x = pooling.max_pool(x, stem.pool1_window, stem.pool1_strides, stem.pool1_padding, pools)
    self.sow('intermediates', 'pool1_out', x)

    for k in (2, 3, 4, 5):
      if k == 3:
        x = pooling.max_pool(x, stem.pool2_window, stem.pool2_strides, stem.pool2_padding, pools)
        self.sow('intermediates', 'pool2_out', x)
      inner = width * 2 ** (k - 2)
      strides = (1, 1, 1) if k == 2 else (1, 2, 2)

      def make_block(i, k=k, inner=inner, strides=strides):
        inflate = pattern[k - 2][i] == 1
        kernel_a = (3, 1, 1) if inflate and self.temporal == 'i3d_3x1x1' else (1, 1, 1)
        kernel_b = (3, 3, 3) if inflate and self.temporal == 'i3d_3x3x3' else (1, 3, 3)
        return self.residual_block_class(blocks.Bottleneck)(inner, 4 * inner, strides if i == 0 else (1, 1, 1), kernel_a, kernel_b,
                                 conv=conv, norm=norm, stride_in_1x1=self.stride_in_1x1,
                                 residual_bn_init=self.residual_bn_init, name=f'res{k}_{i}')

      extra = {}
      if k == 3 and self.nonlocal_res3_temporal_groups is not None:
        extra['temporal_groups'] = self.nonlocal_res3_temporal_groups
      x = self._stage(x, k, make_block, placement[k - 2], train, **extra)

    if not fully_convolutional:
      return self._classify(x, train)
    if self.head_window is not None:
      window = (x.shape[1], min(self.head_window[0], x.shape[2]), min(self.head_window[1], x.shape[3]))
      x = nn.avg_pool(x, window, strides=(1, 1, 1), padding='VALID')
    return probabilities_over_positions(self._pred()(x), multi_label)
