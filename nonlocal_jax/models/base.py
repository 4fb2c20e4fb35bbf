"""What the video and image ResNets share: the non-local block spec, normalisation, residual stages and the head.

The block's options travel as one value, ``nonlocal_block``: a mapping whose keys are ``kind`` (a key of
``nonlocal_jax.layers.family.BLOCK_KINDS``, default 'nonlocal') and that block class's own fields
(``nonlocal_block_fields(kind)``), handed to every block whole. The network adds only what it owns: where the
blocks go (``nonlocal_locations``), the norm, the dtype and the BatchNorm settings.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from nonlocal_jax.layers import batch_norm
from nonlocal_jax.layers import family
from nonlocal_jax.layers import pooling
from nonlocal_jax.models import blocks
from nonlocal_jax.models.placement import resolve_nonlocal_locations


# What ``remat`` recomputes in the backward pass instead of keeping from the forward pass (see ResNetBase).
REMAT = ('none', 'nonlocal', 'stages', 'all')
# Inside a rematerialised block nothing is kept: only the block's input lives from the forward to the backward pass.
REMAT_POLICY = jax.checkpoint_policies.nothing_saveable

# Block fields that the network sets from its own fields, so they are not part of the block spec.
NETWORK_OWNED_BLOCK_FIELDS = ('dtype', 'bn_axis_name', 'bn_momentum', 'bn_epsilon', 'pool_implementation')


def nonlocal_block_fields(kind: str = family.DEFAULT_KIND) -> Tuple[str, ...]:
  """The keys a ``nonlocal_block`` spec of ``kind`` may hold: 'kind', then the fields of that block class minus
  those the network owns (for the default kind: NonLocalBlock's)."""
  return ('kind',) + tuple(f for f in family.block_fields(kind) if f not in NETWORK_OWNED_BLOCK_FIELDS)


def _same(a: Any, b: Any) -> bool:
  """Equality that treats lists and tuples alike (config values come back as either)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return tuple(a) == tuple(b)
  return a == b


def check_one_of(field: str, value: Any, allowed: Sequence[Any]) -> None:
  """Raises a ValueError naming ``field`` unless ``value`` is among ``allowed``."""
  if value not in allowed:
    raise ValueError(f'{field} must be one of {tuple(allowed)}, got {value!r}.')


class ResNetBase(nn.Module):
  """Fields and helpers common to ``ResNetVideo`` and ``ResNetImage`` (see their docstrings)."""
  num_classes: int = 400
  depth: int = 50
  stage_sizes: Optional[Sequence[int]] = None
  width: Optional[int] = None
  stride_in_1x1: bool = False
  nonlocal_locations: Any = 'none'
  nonlocal_block: Optional[Mapping[str, Any]] = None
  norm: str = 'batch'
  bn_axis_name: Optional[str] = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  residual_bn_init: float = 1.0
  dropout_rate: float = 0.5
  conv_implementation: str = 'auto'
  pool_implementation: str = 'auto'
  bn_implementation: str = 'auto'
  remat: str = 'none'
  dtype: Any = jnp.float32

  # The block options a network of this kind uses unless its ``nonlocal_block`` says otherwise.
  NONLOCAL_DEFAULTS = {}
  # The rank (non-channel axes) of the feature maps the blocks see.
  NONLOCAL_RANK = 3

  # --- derived structure, overridden by the subclasses -------------------------------------------------------
  @nn.nowrap
  def resolved_stage_sizes(self) -> Tuple[int, ...]:
    """Residual blocks per stage, res2 first."""
    raise NotImplementedError

  @nn.nowrap
  def resolved_width(self) -> int:
    """Width of the stem and of the first stage's bottleneck."""
    raise NotImplementedError

  @nn.nowrap
  def placement(self) -> Tuple[Tuple[int, ...], ...]:
    """Per stage (res2 first), the indices of the residual blocks followed by a non-local block."""
    return resolve_nonlocal_locations(self.nonlocal_locations, self.resolved_stage_sizes())

  @nn.nowrap
  def num_nonlocal_blocks(self) -> int:
    """How many non-local blocks the network holds."""
    return sum(len(p) for p in self.placement())

  @nn.nowrap
  def _check_common(self) -> None:
    """Validates the shared fields; each error names the config field to fix."""
    if not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f'num_classes must be a positive integer, got {self.num_classes!r}.')
    sizes = self.resolved_stage_sizes()
    if not sizes or any(int(n) < 1 for n in sizes):
      raise ValueError(f'stage_sizes must be positive block counts, one per stage, got {sizes!r}.')
    if self.resolved_width() < 1:
      raise ValueError(f'width must be a positive integer, got {self.width!r}.')
    check_one_of('norm', self.norm, blocks.NORMS)
    check_one_of('conv_implementation', self.conv_implementation, blocks.CONV_IMPLEMENTATIONS)
    pooling.check(self.pool_implementation)
    batch_norm.check(self.bn_implementation, self.bn_axis_name)
    check_one_of('remat', self.remat, REMAT)
    self.check_nonlocal_block()
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'dropout_rate must be in [0, 1), got {self.dropout_rate!r}.')
    if not isinstance(self.stride_in_1x1, bool):
      raise ValueError(f'stride_in_1x1 must be True or False, got {self.stride_in_1x1!r}.')
    if not (isinstance(self.bn_momentum, (int, float)) and 0.0 <= self.bn_momentum <= 1.0):
      raise ValueError(f'bn_momentum must be a number in [0, 1], got {self.bn_momentum!r}.')
    if not (isinstance(self.bn_epsilon, (int, float)) and 0.0 < self.bn_epsilon < float('inf')):
      raise ValueError(f'bn_epsilon must be a positive number, got {self.bn_epsilon!r}.')
    if not (isinstance(self.residual_bn_init, (int, float)) and math.isfinite(self.residual_bn_init)):
      raise ValueError(f'residual_bn_init must be a finite number, got {self.residual_bn_init!r}.')
    if self.bn_axis_name is not None and (not isinstance(self.bn_axis_name, str) or not self.bn_axis_name):
      raise ValueError(f"bn_axis_name must be None or a mapped axis name such as 'batch', got "
                       f'{self.bn_axis_name!r}.')
    self.placement()

  # --- building pieces ---------------------------------------------------------------------------------------
  @nn.nowrap
  def formulation_network(self) -> Optional[str]:
    """The kind of network ('c2d', 'i3d') whose measured formulations 'auto' takes on a device with a table
    (``layers.attention_auto.measured_formulation``); None: the backend's defaults."""
    return None

  def _conv(self):
    implementation = blocks.resolve_conv_implementation(self.conv_implementation, self.formulation_network())
    return blocks.conv_factory(self.dtype, implementation)

  def _pool_implementation(self) -> str:
    """The max pools' implementation, 'auto' resolved for this device and this kind of network (when the
    network is built: resolving reads the device, which a config check must not)."""
    return pooling.resolve(self.pool_implementation, self.formulation_network())

  def _norm(self, train: bool):
    return blocks.norm_factory(self.norm, train=train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                               axis_name=self.bn_axis_name, dtype=self.dtype, implementation=self.bn_implementation)

  @nn.nowrap
  def nonlocal_kind(self) -> str:
    """The kind of this network's blocks: ``nonlocal_block['kind']``, 'nonlocal' when absent or None."""
    kind = (self.nonlocal_block or {}).get('kind') or family.DEFAULT_KIND
    if kind not in family.BLOCK_KINDS:
      raise ValueError(f'nonlocal_block.kind must be one of {tuple(family.BLOCK_KINDS)}, got {kind!r}.')
    return kind

  @nn.nowrap
  def nonlocal_spec_defaults(self) -> dict:
    """{kind: {spec key: its default in this network}} (the non-local block's over ``NONLOCAL_DEFAULTS``)."""
    out = {}
    for kind, cls in family.BLOCK_KINDS.items():
      keys = nonlocal_block_fields(kind)
      out[kind] = {f.name: f.default for f in dataclasses.fields(cls) if f.name in keys}
    out[family.DEFAULT_KIND].update(self.NONLOCAL_DEFAULTS)
    return out

  @nn.nowrap
  def nonlocal_kwargs(self, **overrides) -> dict:
    """The keyword arguments of this network's blocks (of ``nonlocal_kind()``): ``nonlocal_block`` over
    ``NONLOCAL_DEFAULTS`` (non-local blocks only), then the norm (when the block has one and the spec leaves it
    None), dtype and BatchNorm settings of the network, then ``overrides``.

    A spec may hold keys of other kinds at their defaults (the config generates every key of the default kind,
    ``nonlocal_block_config(..., extra_kinds)`` those of several): they are dropped; any other key that the
    chosen block does not take fails, naming it, so a changed option is never silently ignored.
    """
    kind = self.nonlocal_kind()
    fields = nonlocal_block_fields(kind)
    spec = dict(self.NONLOCAL_DEFAULTS) if kind == family.DEFAULT_KIND else {}
    unknown = []
    for key, value in (self.nonlocal_block or {}).items():
      if key in fields:
        spec[key] = value
      elif not any(key in d and _same(value, d[key]) for d in self.nonlocal_spec_defaults().values()):
        unknown.append(key)
    spec.pop('kind', None)
    if unknown:
      block = family.BLOCK_KINDS[kind].__name__
      raise ValueError(f'nonlocal_block has key(s) {sorted(unknown)} that {block} (kind={kind!r}) does not take: '
                       f'remove them (its keys are {", ".join(fields)}).')
    if 'norm' in fields and spec.get('norm') is None:
      spec['norm'] = 'batch' if self.norm == 'batch' else 'affine'
    if spec.get('subsample') is not None:
      spec['subsample'] = tuple(spec['subsample'])
    owned = dict(dtype=self.dtype, bn_axis_name=self.bn_axis_name, bn_momentum=self.bn_momentum,
                 bn_epsilon=self.bn_epsilon, pool_implementation=self.pool_implementation)
    spec.update({k: v for k, v in owned.items() if k in family.block_fields(kind)})
    for key in overrides:
      if key not in fields:
        raise ValueError(f'{key} is not an option of {family.BLOCK_KINDS[kind].__name__} (kind={kind!r}); it '
                         f"applies to kind='nonlocal' blocks.")
    spec.update(overrides)
    return spec

  @nn.nowrap
  def check_nonlocal_block(self, **overrides) -> None:
    """Validates the block spec (with ``overrides``) early, for this network's feature-map rank; the error
    names the ``nonlocal_block`` field to fix."""
    try:
      kwargs = self.nonlocal_kwargs(**overrides)
      family.BLOCK_KINDS[self.nonlocal_kind()](parent=None, **kwargs).check(self.NONLOCAL_RANK)
    except ValueError as e:
      message = str(e)
      raise ValueError(message if message.startswith('nonlocal_block') else f'nonlocal_block.{message}') from None

  def _nonlocal_block(self, stage: int, index: int, **overrides) -> nn.Module:
    """The block (of ``nonlocal_kind()``) after residual block ``index`` of res{stage}, named as the official
    blob prefix; rematerialised when ``remat`` says so (same parameters, same function)."""
    cls = family.BLOCK_KINDS[self.nonlocal_kind()]
    if self.remat in ('nonlocal', 'all'):
      # Argument 2 of __call__ (self, x, train) is the Python bool ``train``: static, not traced.
      cls = nn.remat(cls, policy=REMAT_POLICY, static_argnums=(2,))
    kwargs = self.nonlocal_kwargs(**overrides)
    if 'pool_implementation' in kwargs:
      kwargs['pool_implementation'] = self._pool_implementation()
    return cls(**kwargs, name=f'nonlocal_conv{stage}_{index}')

  @nn.nowrap
  def residual_block_class(self, cls: type) -> type:
    """The residual block class ``cls``, rematerialised when ``remat`` is 'stages' or 'all'."""
    if self.remat in ('stages', 'all'):
      return nn.remat(cls, policy=REMAT_POLICY)
    return cls

  def _stage(self, x, stage: int, make_block, nonlocal_after: Sequence[int], train: bool, **nonlocal_extra):
    """Runs residual stage res{stage}: ``make_block(index)`` builds block i; non-local blocks follow some."""
    for i in range(self.resolved_stage_sizes()[stage - 2]):
      x = make_block(i)(x)
      if i in nonlocal_after:
        x = self._nonlocal_block(stage, i, **nonlocal_extra)(x, train)
    self.sow('intermediates', f'res{stage}_out', x)
    return x

  def _classify(self, x, train: bool):
    """Global average pool, dropout, fc ('pred'): (B, *positions, C) -> (B, num_classes) float32 logits."""
    pooled = jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))
    self.sow('intermediates', 'pool5_out', pooled)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)(pooled)
    logits = self._pred()(pooled.astype(self.dtype))
    return logits.astype(jnp.float32)

  def _pred(self) -> nn.Dense:
    return nn.Dense(self.num_classes, kernel_init=blocks.FC_INIT, bias_init=nn.initializers.zeros,
                    dtype=self.dtype, param_dtype=jnp.float32, name='pred')


def softmax_over_positions(logits) -> jax.Array:
  """(B, *positions, K) logits -> (B, K): the softmax at every position, averaged over positions, in float32."""
  return probabilities_over_positions(logits)


def probabilities_over_positions(logits, multi_label: bool = False) -> jax.Array:
  """(B, *positions, K) logits -> (B, K): the softmax (``multi_label``: each class's sigmoid) at every position,
  averaged over positions, in float32."""
  logits = logits.astype(jnp.float32)
  probs = jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits, axis=-1)
  return jnp.mean(probs, axis=tuple(range(1, logits.ndim - 1)))
