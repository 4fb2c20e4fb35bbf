"""Per-stage output shapes, parameters and multiply-adds of a model, without allocating or running it.

    python -m nonlocal_jax.models.summary --config=configs/kinetics_nl.py
    python -m nonlocal_jax.models.summary --config=configs/kinetics_nl.py:arch=c2d,depth=101,blocks=none \\
        --input_size=32,224,224 --xla_cost

Shapes come from ``jax.eval_shape`` of ``model.init`` (nothing is allocated). Multiply-adds are an exact count
from the layer shapes seen while tracing: every convolution and dense layer (output positions × kernel volume ×
C_in / groups × C_out), plus the two products of each non-local block's eq. (1), θᵀφ and f·g, as written
(whichever implementation runs), or the attention products of another kind of block (its ``attention_macs``;
a block applied R times, as the criss-cross block, counts its convolutions R times). Normalisation,
activations, pooling and additions are not counted, as in the paper's FLOPs. ``--xla_cost`` also prints XLA's
own flop count of the lowered (not compiled) forward pass.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from nonlocal_jax.layers import BLOCK_KINDS, PAIRWISE, NonLocalBlock, PositionSets
from nonlocal_jax.models.blocks import Conv
from nonlocal_jax.models.registry import build_model

_STAGE_ORDER = ('conv1', 'pool1', 'res2', 'pool2', 'res3', 'res4', 'res5', 'head')


@dataclasses.dataclass
class StageRow:
  """One line of the summary: a stage's output shape (without batch), parameters and multiply-adds."""
  stage: str
  output_shape: Tuple[int, ...]
  params: int = 0
  macs: int = 0
  nonlocal_blocks: int = 0


@dataclasses.dataclass
class ModelSummary:
  """Shapes, parameter counts and multiply-adds of one model at one input size (``analyse``)."""
  input_shape: Tuple[int, ...]
  rows: List[StageRow]
  params: int
  batch_stats: int
  macs: int
  param_shapes: Any = None

  def table(self) -> str:
    """The summary as a markdown table."""
    lines = ['| stage | output | params | multiply-adds |', '|---|---|---:|---:|']
    for r in self.rows:
      name = r.stage + (f' (+{r.nonlocal_blocks} NL)' if r.nonlocal_blocks else '')
      shape = '×'.join(map(str, r.output_shape))
      lines.append(f'| {name} | {shape} | {r.params:,} | {r.macs / 1e9:.3f} G |')
    lines.append(f'| **total** | | **{self.params:,}** ({self.params / 1e6:.2f} M) | **{self.macs / 1e9:.2f} G** |')
    return '\n'.join(lines)


def _stage_of(top_level_name: str) -> str:
  """Which summary row a top-level module belongs to."""
  if top_level_name in ('conv1', 'res_conv1_bn'):
    return 'conv1'
  if top_level_name == 'pred':
    return 'head'
  match = re.fullmatch(r'(?:res|nonlocal_conv)(\d+)_\d+', top_level_name)
  return f'res{match.group(1)}' if match else top_level_name


def nonlocal_attention_macs(block: NonLocalBlock, input_shape: Sequence[int]) -> int:
  """Multiply-adds of the pairwise part of one non-local block: θᵀφ (the affinity) and f·g, as in eq. (1)."""
  b, *spatial, c = (int(s) for s in input_shape)
  inter = block.inter_channels or max(1, c // 2)
  window = tuple(block.subsample) if block.subsample is not None else (1,) * len(spatial)
  key_grid = [s // w for s, w in zip(spatial, window)]
  sets = PositionSets(block.positions or 'spacetime', block.temporal_groups)
  groups, n_query, n_key = sets.set_sizes(spatial, key_grid)
  function = PAIRWISE[block.pairwise]
  affinity = function.affinity_macs(n_query, n_key, inter if function.embedded else c)
  return b * groups * (affinity + n_query * n_key * inter)


def _layer_macs(module: nn.Module, args, out) -> int:
  """Multiply-adds of one call of a conv, dense or non-local module (0 for anything else)."""
  if isinstance(module, Conv):
    return math.prod(out.shape[:-1]) * math.prod(module.kernel_size) * args[0].shape[-1] * module.features
  if isinstance(module, nn.Conv):
    kernel = module.kernel_size if isinstance(module.kernel_size, Sequence) else (module.kernel_size,)
    c_in = args[0].shape[-1]
    return math.prod(out.shape[:-1]) * math.prod(kernel) * c_in // module.feature_group_count * module.features
  if isinstance(module, nn.Dense):
    return math.prod(out.shape[:-1]) * args[0].shape[-1] * module.features
  if isinstance(module, NonLocalBlock):
    return nonlocal_attention_macs(module, args[0].shape)
  if isinstance(module, tuple(BLOCK_KINDS.values())):
    return module.attention_macs(args[0].shape)
  return 0


def analyse(model: nn.Module, input_shape: Sequence[int], dtype: Any = jnp.float32) -> ModelSummary:
  """Traces ``model.init`` abstractly on an input of ``input_shape`` (batch included) and tallies each stage."""
  input_shape = tuple(int(s) for s in input_shape)
  if hasattr(model, 'check_input'):
    model.check_input(input_shape)
  macs_by_path: List[Tuple[Tuple[str, ...], int]] = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      macs = _layer_macs(context.module, args, out)
      if macs:
        macs_by_path.append((tuple(context.module.path), macs))
    return out

  def init(x):
    with nn.intercept_methods(interceptor):
      rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
      return model.init_with_output(rngs, x, train=False, mutable=True)

  logits, variables = jax.eval_shape(init, jax.ShapeDtypeStruct(input_shape, dtype))
  batch = input_shape[0]
  intermediates = variables.get('intermediates', {})
  rows: Dict[str, StageRow] = {}
  for stage in _STAGE_ORDER:
    if stage == 'head':
      rows[stage] = StageRow(stage, tuple(logits.shape[1:]))
    elif f'{stage}_out' in intermediates:
      rows[stage] = StageRow(stage, tuple(intermediates[f'{stage}_out'][0].shape[1:]))
  params = variables.get('params', {})
  for name, subtree in params.items():
    stage = _stage_of(name)
    rows.setdefault(stage, StageRow(stage, ()))
    rows[stage].params += sum(leaf.size for leaf in jax.tree.leaves(subtree))
    if name.startswith('nonlocal_'):
      rows[stage].nonlocal_blocks += 1
  for path, macs in macs_by_path:
    stage = _stage_of(path[0])
    rows.setdefault(stage, StageRow(stage, ()))
    rows[stage].macs += macs // batch
  ordered = [rows[s] for s in _STAGE_ORDER if s in rows] + [r for s, r in rows.items() if s not in _STAGE_ORDER]
  count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
  return ModelSummary(input_shape=input_shape, rows=ordered, params=count(params),
                      batch_stats=count(variables.get('batch_stats', {})), macs=sum(r.macs for r in ordered),
                      param_shapes=params)


def xla_flops(model: nn.Module, input_shape: Sequence[int], dtype: Any = jnp.float32) -> Optional[float]:
  """XLA's flop count of the lowered (not compiled, not run) inference forward pass, or None if unavailable."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def default_input_shape(model: nn.Module, data_config: Any = None) -> Tuple[int, ...]:
  """A batch of one at the training size: the data config's num_frames × crop_size², else the paper's.

  Without a data config: 32 or 8 frames (by stem) of 224×224 for video, 224×224 images (32×32 for CIFAR).
  """
  stem = getattr(model, 'stem', None)
  if stem in ('cifar', 'imagenet'):
    size = data_config.get('crop_size') if data_config is not None else None
    size = size or (32 if stem == 'cifar' else 224)
    return (1, size, size, 3)
  frames = data_config.get('num_frames') if data_config is not None else None
  size = data_config.get('crop_size') if data_config is not None else None
  return (1, frames or (8 if stem == '8x8' else 32), size or 224, size or 224, 3)


def describe(model: nn.Module) -> str:
  """One line naming the network."""
  name = type(model).__name__
  parts = [name, f'stages {model.resolved_stage_sizes()}', f'width {model.resolved_width()}']
  if hasattr(model, 'temporal'):
    parts += [model.temporal, f'stem {model.stem}']
  n = model.num_nonlocal_blocks()
  if n:
    kind = model.nonlocal_kind()
    what = model.nonlocal_kwargs()['pairwise'] if kind == 'nonlocal' else f'kind {kind}'
    parts.append(f'{n} non-local ({what}, {model.nonlocal_locations!r})')
  parts.append(f'{model.num_classes} classes')
  return ', '.join(parts)


def main(argv: Sequence[str]) -> None:
  """Prints the summary of ``--config``'s model."""
  del argv
  config = flags.FLAGS.config
  model = build_model(config.model)
  if flags.FLAGS.input_size:
    size = tuple(int(s) for s in flags.FLAGS.input_size.split(','))
    input_shape = (1,) + size + (3,)
  else:
    input_shape = default_input_shape(model, config.get('data'))
  summary = analyse(model, input_shape)
  print(describe(model))
  print(f'input {"×".join(map(str, input_shape))} (B, ..., C); multiply-adds per example\n')
  print(summary.table())
  print(f'\nnon-trainable BatchNorm statistics: {summary.batch_stats:,}')
  if flags.FLAGS.xla_cost:
    flops = xla_flops(model, input_shape)
    if flops is not None:
      print(f'XLA cost analysis (all ops, lowered): {flops / 1e9:.2f} GFLOPs = {flops / 2e9:.2f} G multiply-adds')


def _define_flags_and_run() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (e.g. configs/kinetics_nl.py[:arg]).',
                                  lock_config=True)
  flags.DEFINE_string('input_size', None, 'T,H,W (video) or H,W (images); default: config.data.num_frames '
                      'and crop_size, else the paper\'s training size.')
  flags.DEFINE_bool('xla_cost', False, "Also print XLA's flop count of the lowered forward pass.")
  flags.mark_flags_as_required(['config'])
  app.run(main)


if __name__ == '__main__':
  _define_flags_and_run()
