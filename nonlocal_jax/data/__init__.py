"""Datasets and input pipelines: Kinetics from local videos, the long-range synthetic benchmark, tf.data over TFDS.

Modules: ``kinetics`` (TFDS builder reading a local Kinetics copy), ``synthetic`` (the long-range digits
benchmark), ``video_io`` (PyAV decoding), ``sampling`` (clip indices and crop positions), ``pipeline`` (train
iterators and evaluation views), ``prepare`` (the command line that builds a dataset).

Attributes are imported on first use: decoding workers import ``nonlocal_jax.data.video_io`` and should not pay
for TensorFlow. ``import nonlocal_jax.data.kinetics`` (or any pipeline function) registers the local builders
with TFDS.
"""

import importlib

_EXPORTS = {
    'ALIASES': 'pipeline',
    'DatasetNotPreparedError': 'pipeline',
    'EvalDataset': 'pipeline',
    'ProcessLayout': 'pipeline',
    'aggregate_views': 'pipeline',
    'check_prepared': 'pipeline',
    'create_eval_dataset': 'pipeline',
    'create_train_iterator': 'pipeline',
    'get_builder': 'pipeline',
    'num_classes': 'pipeline',
    'prepare_command': 'pipeline',
    'resolve_name': 'pipeline',
    'center_clip_indices': 'sampling',
    'crop_offsets': 'sampling',
    'test_clip_indices': 'sampling',
    'train_clip_indices': 'sampling',
    'synthetic_config': 'synthetic',
    'decode_video': 'video_io',
    'VideoDecodeError': 'video_io',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
