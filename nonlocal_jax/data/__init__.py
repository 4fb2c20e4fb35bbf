"""Datasets and input pipelines: Kinetics from local videos, the long-range synthetic benchmark, tf.data over TFDS.

Modules: ``kinetics`` (TFDS builder reading a local Kinetics copy), ``kinetics_annotations`` (its CSVs, read
strictly), ``charades`` and ``charades_annotations`` (the same for Charades), ``local_videos`` (what those builders
share), ``clip_labels`` (a Charades training clip's label from its actions), ``synthetic`` (the long-range digits
benchmark), ``video_io`` (PyAV decoding), ``sampling`` (clip indices
and crop positions), ``builders`` (datasets by name, whether they are prepared, their classes), ``layout`` (this
process's share of batches and splits), ``normalization`` (the input normalisation's constants), ``transforms`` (the
tf.data operations on frames), ``train_pipeline`` (the training stream), ``eval_pipeline`` (evaluation views),
``prepare`` (the command line that builds a dataset), ``fake`` (random batches made on the device, for throughput).
The settings come from ``config.data`` (documented in ``configs/default.py``).

Batches are NumPy arrays of this process's share, ready for ``jax.make_array_from_process_local_data`` and
``shard_map`` over a 1-D mesh: B, the first axis of every array, is ``global_batch_size / jax.process_count()``.

Attributes are imported on first use: decoding workers import ``nonlocal_jax.data.video_io`` and should not pay
for TensorFlow. ``import nonlocal_jax.data.builders`` (or any pipeline function) registers the local builders
with TFDS.
"""

import importlib

_EXPORTS = {
    'ALIASES': 'builders',
    'DatasetNotPreparedError': 'builders',
    'check_prepared': 'builders',
    'class_names': 'builders',
    'get_builder': 'builders',
    'num_classes': 'builders',
    'prepare_command': 'builders',
    'resolve_name': 'builders',
    'ProcessLayout': 'layout',
    'EvalDataset': 'eval_pipeline',
    'create_eval_dataset': 'eval_pipeline',
    'create_train_iterator': 'train_pipeline',
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
