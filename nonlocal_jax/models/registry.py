"""Models by name: ``build_model(config.model)`` turns the config's model section into a Flax module.

The section holds ``name`` (a key of ``MODELS``) and any fields of that model class, which keep their defaults
when absent. Unknown names and fields fail with a message that lists the allowed ones; invalid values fail
with a message that names the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

import jax.numpy as jnp

from nonlocal_jax.models.resnet_image import ResNetImage
from nonlocal_jax.models.resnet_video import ResNetVideo

MODELS = {'resnet_video': ResNetVideo, 'resnet_image': ResNetImage}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
_FLAX_FIELDS = ('parent', 'name')


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
  if unknown:
    raise ValueError(f'config.model has field(s) {unknown} that model {name!r} does not take; remove or rename '
                     f'them. Allowed fields: {", ".join(sorted(allowed))}.')
  if isinstance(fields.get('nonlocal_locations'), Mapping):
    # Module attributes must be hashable: {'res3': (1, 3)} becomes the equivalent 'res3:1,3'.
    fields['nonlocal_locations'] = ';'.join(
        f'{k if str(k).startswith("res") else f"res{k}"}:{",".join(str(i) for i in v)}'
        for k, v in fields['nonlocal_locations'].items())
  if isinstance(fields.get('dtype'), str):
    if fields['dtype'] not in DTYPES:
      raise ValueError(f'config.model.dtype must be one of {tuple(DTYPES)}, got {fields["dtype"]!r}.')
    fields['dtype'] = DTYPES[fields['dtype']]
  return MODELS[name], fields


def build_model(model_config: Any):
  """Builds the Flax module described by ``model_config`` (e.g. ``config.model``) and validates its fields.

  Raises:
    ValueError: for an unknown model name or field, or an invalid value (the message names the field).
  """
  cls, kwargs = model_kwargs(model_config)
  model = cls(**kwargs)
  model.check()
  return model
