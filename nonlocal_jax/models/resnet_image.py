"""Image ResNets (ImageNet ResNet-18/34/50/101/152 and CIFAR ResNet-20/32/44/56/110) with 2D non-local blocks.

Input images are channels-last, (B, H, W, C); the output is (B, num_classes) float32 logits.

Parameter names are those of the video networks (``nonlocal_jax.models.resnet_video``) with 2D kernels, which
are also the names of the official Caffe2 ImageNet models used for I3D inflation:

    conv1/kernel (7, 7, C_in, width), res_conv1_bn/*, res{k}_{i}/branch2{a,b,c}/kernel (kH, kW, C_in, C_out),
    res{k}_{i}/branch2{a,b,c}_bn/*, res{k}_0/branch1*, nonlocal_conv{k}_{i}/*, pred/{kernel,bias}

Basic blocks (ResNet-18/34, CIFAR) have branch2a and branch2b only. The stage outputs are sown as
'intermediates' (``conv1_out``, ``pool1_out``, ``res2_out`` ..., ``pool5_out``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn

from nonlocal_jax.layers import pooling
from nonlocal_jax.models import blocks
from nonlocal_jax.models.base import ResNetBase, check_one_of

IMAGENET_DEPTHS = {18: ((2, 2, 2, 2), 'basic'), 34: ((3, 4, 6, 3), 'basic'), 50: ((3, 4, 6, 3), 'bottleneck'),
                   101: ((3, 4, 23, 3), 'bottleneck'), 152: ((3, 8, 36, 3), 'bottleneck')}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
IMAGE_STEMS = ('imagenet', 'cifar')
BLOCKS = ('bottleneck', 'basic')


class ResNetImage(ResNetBase):
  """ResNet for images (B, H, W, C), with optional 2D non-local blocks.

  Attributes:
    num_classes: classifier outputs (1000 for ImageNet, 10 for CIFAR-10).
    depth: ImageNet 18, 34, 50, 101, 152 (stem='imagenet') or CIFAR 6n+2 = 20, 32, 44, 56, 110 (stem='cifar');
      sets stage_sizes and block unless they are given.
    stage_sizes: residual blocks per stage, res2 first; overrides depth.
    width: channels of conv1 and of the first stage (None: 64 for 'imagenet', 16 for 'cifar'); each later
      stage doubles it, and bottleneck outputs are 4× wider.
    block: 'bottleneck' or 'basic'; None follows depth.
    stem: 'imagenet' (7×7/2 conv, 3×3/2 max pool; four stages) or 'cifar' (3×3 conv, no pool; three stages).
    stride_in_1x1: stride on branch2a (original MSRA ResNet) instead of branch2b (torchvision "v1.5").
    nonlocal_locations, nonlocal_block: as ``ResNetVideo``, with 2D blocks (the default subsample is (2, 2)).
    norm, bn_axis_name, bn_momentum, bn_epsilon, residual_bn_init, conv_implementation, pool_implementation,
      bn_implementation, remat, dtype: as ``ResNetVideo`` (2D convolutions are always native).
    dropout_rate: dropout before the classifier (0 by default for images).
  """
  num_classes: int = 1000
  width: Optional[int] = None
  block: Optional[str] = None
  stem: str = 'imagenet'
  dropout_rate: float = 0.0

  NONLOCAL_DEFAULTS = {'subsample': (2, 2)}
  NONLOCAL_RANK = 2

  @nn.nowrap
  def resolved_stage_sizes(self) -> Tuple[int, ...]:
    """Residual blocks per stage, res2 first."""
    if self.stage_sizes is not None:
      return tuple(int(n) for n in self.stage_sizes)
    if self.stem == 'cifar':
      if self.depth not in CIFAR_DEPTHS:
        raise ValueError(f"depth must be one of {CIFAR_DEPTHS} with stem='cifar' (or give stage_sizes), got "
                         f'{self.depth!r}.')
      return ((self.depth - 2) // 6,) * 3
    if self.depth not in IMAGENET_DEPTHS:
      raise ValueError(f"depth must be one of {tuple(IMAGENET_DEPTHS)} with stem='imagenet' (or give "
                       f'stage_sizes), got {self.depth!r}.')
    return IMAGENET_DEPTHS[self.depth][0]

  @nn.nowrap
  def resolved_width(self) -> int:
    """Channels of conv1 and of the first stage."""
    if self.width is not None:
      return int(self.width)
    return 16 if self.stem == 'cifar' else 64

  @nn.nowrap
  def resolved_block(self) -> str:
    """'bottleneck' or 'basic'."""
    if self.block is not None:
      return self.block
    if self.stem == 'cifar':
      return 'basic'
    return IMAGENET_DEPTHS[self.depth][1] if self.depth in IMAGENET_DEPTHS else 'bottleneck'

  @nn.nowrap
  def check(self) -> None:
    """Validates the fields (build_model calls this); each error names the config field to fix."""
    check_one_of('stem', self.stem, IMAGE_STEMS)
    self._check_common()
    check_one_of('block', self.resolved_block(), BLOCKS)

  @nn.nowrap
  def check_input(self, shape: Sequence[int]) -> None:
    """Raises a ValueError saying what size to use when a (B, H, W, C) input does not fit the network."""
    if len(shape) != 4:
      raise ValueError(f'ResNetImage expects channels-last images (B, H, W, C); got an input of shape '
                       f'{tuple(shape)}. Add the missing axes (e.g. x[None] for a single image).')
    h, w = shape[1:3]
    downsample = 2 ** (len(self.resolved_stage_sizes()) - 1) * (4 if self.stem == 'imagenet' else 1)
    window = self.nonlocal_kwargs().get('subsample') or (1, 1)
    need = 1
    for k, indices in enumerate(self.placement()):
      if indices:
        stride = (4 if self.stem == 'imagenet' else 1) * 2 ** k
        need = max(need, stride * (max(window) - 1) + 1)
    if min(h, w) < need:
      raise ValueError(f'Images of H×W = {h}×{w} are too small for the non-local blocks of this network (they '
                       f'subsample with window {window}); use images of at least {need}×{need} '
                       f'(the network downsamples by {downsample}).')

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Classifies images ``x`` (B, H, W, C); ``train`` as in ``ResNetVideo``. Returns float32 logits."""
    self.check()
    self.check_input(x.shape)
    conv, norm = self._conv(), self._norm(train)
    width = self.resolved_width()
    bottleneck = self.resolved_block() == 'bottleneck'
    block_cls = self.residual_block_class(blocks.Bottleneck if bottleneck else blocks.BasicBlock)
    expansion = 4 if bottleneck else 1

    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(width, (7, 7), (2, 2), name='conv1')(x)
      x = norm(name='res_conv1_bn', relu=True)(x)
      self.sow('intermediates', 'conv1_out', x)
      x = pooling.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), self._pool_implementation())
      self.sow('intermediates', 'pool1_out', x)
    else:
      x = conv(width, (3, 3), name='conv1')(x)
      x = norm(name='res_conv1_bn', relu=True)(x)
      self.sow('intermediates', 'conv1_out', x)

    for k, after in enumerate(self.placement()):
      stage = k + 2
      inner = width * 2 ** k
      strides = (1, 1) if k == 0 else (2, 2)

      def make_block(i, stage=stage, inner=inner, strides=strides):
        kernel_a = (1, 1) if bottleneck else (3, 3)
        return block_cls(inner, expansion * inner, strides if i == 0 else (1, 1), kernel_a, (3, 3), conv=conv,
                         norm=norm, stride_in_1x1=self.stride_in_1x1, residual_bn_init=self.residual_bn_init,
                         name=f'res{stage}_{i}')

      x = self._stage(x, stage, make_block, after, train)
    return self._classify(x, train)
