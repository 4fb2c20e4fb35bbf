"""Models: video ResNets (C2D / I3D) and image ResNets with non-local blocks, and a registry by name.

    from nonlocal_jax.models import build_model
    model = build_model(config.model)          # e.g. ResNetVideo(depth=50, temporal='i3d_3x1x1', ...)

Parameter names follow the official Caffe2 blobs one-to-one (``nonlocal_jax.models.naming``); shapes, parameter
counts and multiply-adds are reported by ``python -m nonlocal_jax.models.summary --config=...``.
"""

from nonlocal_jax.models.naming import caffe2_name, caffe2_names
from nonlocal_jax.models.placement import PRESETS as NONLOCAL_PRESETS
from nonlocal_jax.models.placement import resolve_nonlocal_locations
from nonlocal_jax.models.registry import MODELS, build_model, model_fields
from nonlocal_jax.models.resnet_image import (CifarResNet20, ResNet18, ResNet50, ResNet101, ResNetImage,
                                              TinyResNetImage)
from nonlocal_jax.models.resnet_video import (STEMS, TEMPORAL, C2DResNet50, C2DResNet101, I3DResNet50,
                                              I3DResNet101, ResNetVideo, TinyResNetVideo,
                                              official_temporal_pattern)

__all__ = [
    'C2DResNet101', 'C2DResNet50', 'CifarResNet20', 'I3DResNet101', 'I3DResNet50', 'MODELS', 'NONLOCAL_PRESETS',
    'ResNet101', 'ResNet18', 'ResNet50', 'ResNetImage', 'ResNetVideo', 'STEMS', 'TEMPORAL', 'TinyResNetImage',
    'TinyResNetVideo', 'build_model', 'caffe2_name', 'caffe2_names', 'model_fields', 'official_temporal_pattern',
    'resolve_nonlocal_locations',
]
