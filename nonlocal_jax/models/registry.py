"""Models by name: ``build_model(config.model)`` turns the config's model section into a Flax module.

The section holds ``name`` (a key of ``MODELS``) and any fields of that model class, which keep their defaults
when absent. Unknown names and fields fail with a message that lists the allowed ones; invalid values fail
with a message that names the field.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from typing import Any, Dict, Mapping, Optional, Sequence

import flax
import jax.numpy as jnp
import ml_collections

from nonlocal_jax.layers.family import DEFAULT_KIND, block_class
from nonlocal_jax.models.base import nonlocal_block_fields
from nonlocal_jax.models.resnet_image import ResNetImage
from nonlocal_jax.models.resnet_video import ResNetVideo

MODELS = {'resnet_video': ResNetVideo, 'resnet_image': ResNetImage}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
_FLAX_FIELDS = ('parent', 'name')


def renamed_field(old: str) -> Optional[str]:
  """The field that replaced model field ``old`` ('nonlocal_pairwise' -> 'nonlocal_block.pairwise'), or None."""
  if old.startswith('nonlocal_') and old[len('nonlocal_'):] in nonlocal_block_fields():
    return f'nonlocal_block.{old[len("nonlocal_"):]}'
  return None


def model_fields(name: str) -> tuple:
  """The config fields that model ``name`` accepts (its dataclass fields)."""
  return tuple(f.name for f in dataclasses.fields(MODELS[name]) if f.name not in _FLAX_FIELDS)


def _plain(value: Any) -> Any:
  """ConfigDict / lists -> dicts / tuples, so module attributes are hashable and immutable."""
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def model_kwargs(model_config: Any) -> tuple:
  """Splits a model config into (model class, keyword arguments), checking the name and the fields."""
  fields: Dict[str, Any] = _plain(model_config)
  if not isinstance(fields, dict):
    raise ValueError(f'The model config must be a ConfigDict or a mapping, got {type(model_config).__name__}.')
  name = fields.pop('name', None)
  if name not in MODELS:
    raise ValueError(f'config.model.name must be one of {tuple(MODELS)}, got {name!r}.')
  allowed = model_fields(name)
  unknown = sorted(set(fields) - set(allowed))
  moved = [f for f in unknown if renamed_field(f)]
  if moved:
    raise ValueError(f'config.model.{moved[0]} is now config.model.{renamed_field(moved[0])}: the block options '
                     'live in one sub-dict, config.model.nonlocal_block, whose keys are the block\'s own fields.')
  if unknown:
    raise ValueError(f'config.model has field(s) {unknown} that model {name!r} does not take; remove or rename '
                     f'them. Allowed fields: {", ".join(sorted(allowed))}.')
  # Module attributes must be hashable (jit treats the model as static): mappings become FrozenDicts.
  fields = {k: flax.core.FrozenDict(v) if isinstance(v, Mapping) else v for k, v in fields.items()}
  if isinstance(fields.get('dtype'), str):
    if fields['dtype'] not in DTYPES:
      raise ValueError(f'config.model.dtype must be one of {tuple(DTYPES)}, got {fields["dtype"]!r}.')
    fields['dtype'] = DTYPES[fields['dtype']]
  return MODELS[name], fields


def _placeholder_type(annotation: Any) -> type:
  """The type an override of a field that defaults to None must have: int for Optional[int], tuple for an
  Optional[Sequence[...]], ... (ml_collections needs it to parse --config.model.nonlocal_block.x=... flags)."""
  inner = [a for a in typing.get_args(annotation) if a is not type(None)]
  base = typing.get_origin(inner[0]) or inner[0] if inner else str
  return tuple if base in (collections.abc.Sequence, list, tuple) else base


def nonlocal_block_config(model_name: str = 'resnet_video', kind: str = DEFAULT_KIND,
                          extra_kinds: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """``config.model.nonlocal_block``: ``kind`` and every field of that block's spec at the default of a
  ``model_name`` network, then the fields of ``extra_kinds`` that it lacks, at their defaults.

  Generated from the block classes' fields (see their docstrings; ``NonLocalBlock`` for the default kind), so
  the config offers exactly the blocks' options; None defaults become typed placeholders that command-line
  flags can set. ``extra_kinds`` makes one spec that a locked config (a sweep) can switch between kinds: the
  network drops the keys of other kinds while they hold their defaults.
  """
  spec = ml_collections.ConfigDict()
  spec.kind = kind
  for each in (kind,) + tuple(k for k in extra_kinds if k != kind):
    cls = block_class(each)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    annotations = typing.get_type_hints(cls)
    defaults = MODELS[model_name].NONLOCAL_DEFAULTS if each == DEFAULT_KIND else {}
    for name in nonlocal_block_fields(each)[1:]:
      if name in spec:
        continue
      value = defaults.get(name, fields[name].default)
      if value is None:
        value = ml_collections.config_dict.placeholder(_placeholder_type(annotations[name]))
      spec[name] = value
  return spec


def build_model(model_config: Any):
  """Builds the Flax module described by ``model_config`` (e.g. ``config.model``) and validates its fields.

  Raises:
    ValueError: for an unknown model name or field, or an invalid value (the message names the field).
  """
  cls, kwargs = model_kwargs(model_config)
  model = cls(**kwargs)
  model.check()
  return model
