"""Models: video ResNets (C2D / I3D) and image ResNets with non-local blocks, and a registry by name.

    from nonlocal_jax.models import build_model
    model = build_model(config.model)          # e.g. ResNetVideo(depth=50, temporal='i3d_3x1x1', ...)

The non-local blocks' options are one value, ``config.model.nonlocal_block`` (keys: ``kind``, a key of
``nonlocal_jax.layers.BLOCK_KINDS``, and that block's fields: ``NonLocalBlock``'s for the default kind);
the network adds where they go (``nonlocal_locations``, ``nonlocal_jax.models.placement``). Parameter names
follow the official Caffe2 blobs one-to-one (``nonlocal_jax.models.naming``); shapes, parameter counts and
multiply-adds are reported by ``python -m nonlocal_jax.models.summary --config=...``.
"""

from nonlocal_jax.models.base import nonlocal_block_fields
from nonlocal_jax.models.naming import caffe2_name, caffe2_names
from nonlocal_jax.models.placement import PRESETS as NONLOCAL_PRESETS
from nonlocal_jax.models.placement import resolve_nonlocal_locations
from nonlocal_jax.models.registry import MODELS, build_model, model_fields, renamed_field
from nonlocal_jax.models.resnet_image import ResNetImage
from nonlocal_jax.models.resnet_video import STEMS, TEMPORAL, ResNetVideo, official_temporal_pattern

__all__ = [
    'MODELS', 'NONLOCAL_PRESETS', 'ResNetImage', 'ResNetVideo', 'STEMS', 'TEMPORAL', 'build_model', 'caffe2_name',
    'caffe2_names', 'model_fields', 'nonlocal_block_fields', 'official_temporal_pattern', 'renamed_field',
    'resolve_nonlocal_locations',
]
