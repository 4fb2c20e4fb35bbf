"""Datasets by name: the TFDS builder of a name, whether it is prepared, and what its examples hold.

Any TFDS dataset works by name: video datasets (the first ``tfds.features.Video`` feature is the video: the local
``kinetics400``/``600``/``700``, ``charades`` and ``synthetic_long_range/...`` builders of this package,
``ucf101``, ...) and image datasets (the first ``tfds.features.Image``: ``cifar10``, ``imagenet2012``,
``imagenette``, ...). Nothing here downloads or prepares a dataset (``nonlocal_jax.data.prepare`` does), and nothing
here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import tensorflow_datasets as tfds

from nonlocal_jax import paths
# Importing the three modules registers their builders with TFDS under 'kinetics', 'charades' and
# 'synthetic_long_range'.
from nonlocal_jax.data import charades  # pylint: disable=unused-import
from nonlocal_jax.data import kinetics  # pylint: disable=unused-import
from nonlocal_jax.data import synthetic as synthetic_lib

# Names this package accepts besides TFDS's own: the Kinetics releases by their usual names.
ALIASES = {'kinetics400': 'kinetics/400', 'kinetics600': 'kinetics/600', 'kinetics700': 'kinetics/700',
           'synthetic_long_range': 'synthetic_long_range/same_different'}


class DatasetNotPreparedError(FileNotFoundError):
  """The dataset has not been prepared in the data directory; the message gives the command that prepares it."""


def resolve_name(name: str) -> str:
  """The TFDS name for ``name`` ('kinetics400' → 'kinetics/400'); other names are returned unchanged."""
  return ALIASES.get(name, name)


def prepare_command(name: str, data_dir: Optional[str]) -> str:
  """The shell command that prepares ``name`` in ``data_dir``."""
  where = data_dir or '~/tensorflow_datasets'
  full = resolve_name(name)
  if full.startswith('kinetics/') or full == 'charades':
    local = f'kinetics{full.split("/")[1]}' if full.startswith('kinetics/') else full
    command = f'python -m nonlocal_jax.data.prepare {local} --videos=DIR --annotations=DIR'
    if paths.is_remote(where):
      # Decoding needs the videos and a local cache, so local copies are prepared on a disk and then copied.
      return f'{command} --data_dir=LOCAL_DIR && gsutil -m rsync -r LOCAL_DIR {where}'
    return f'{command} --data_dir={where}'
  return f'python -m nonlocal_jax.data.prepare {name} --data_dir={where}'


def get_builder(name: str, data_dir: Optional[str] = None, synthetic: Any = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder for ``name`` in ``data_dir`` (local or gs://); never downloads, never prepares.

  TFDS's own bucket of prepared datasets is not looked in (``try_gcs=False``). ``synthetic``
  (``config.data.synthetic``) changes the generation settings of ``synthetic_long_range/<task>``; settings left
  at their defaults keep the registered config.
  """
  full = resolve_name(name)
  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)  # Leaves gs:// paths alone, which TFDS reads itself.
  if full.startswith('synthetic_long_range') and synthetic is not None:
    task = full.split('/')[1] if '/' in full else 'same_different'
    config = synthetic_lib.builder_config(task, synthetic)
    if not isinstance(config, str):
      return tfds.builder('synthetic_long_range', config=config, data_dir=data_dir, try_gcs=False)
  try:
    return tfds.builder(full, data_dir=data_dir, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f'Unknown dataset {name!r}: set config.data.name to a TFDS dataset name or one of '
                     f'{sorted(ALIASES)}.') from e


def _tfds_is_mocked() -> bool:
  # tfds.testing.mock_data serves random examples without files; there is nothing prepared to check then.
  method = tfds.core.DatasetBuilder.download_and_prepare
  return getattr(method, '__name__', '') == 'mock_download_and_prepare'


def check_prepared(name: str, data_dir: Optional[str] = None, splits=(), synthetic: Any = None
                   ) -> tfds.core.DatasetBuilder:
  """Returns the builder of ``name`` if it is prepared in ``data_dir`` with ``splits``; raises a clear error if not.

  Call it at start-up: it only reads the dataset's metadata files, so it fails in a second with the command
  to run, instead of TFDS starting a download (there is no network here) or a failure deep in a training step.
  """
  if data_dir is not None and not paths.expand(data_dir).is_dir():
    raise DatasetNotPreparedError(
        f'The data directory {data_dir} does not exist: prepare the dataset there with '
        f'`{prepare_command(name, data_dir)}` or set config.data.data_dir to where it was prepared.')
  builder = get_builder(name, data_dir, synthetic)
  if _tfds_is_mocked():
    return builder
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f'Dataset {resolve_name(name)!r} is not prepared in {builder.data_dir_root}: run '
        f'`{prepare_command(name, data_dir)}` first.')
  for split in splits:
    base = split.split('[')[0]
    if base not in builder.info.splits:
      raise ValueError(f'Dataset {resolve_name(name)!r} has no split {base!r}: use one of '
                       f'{sorted(builder.info.splits)} in config.data.')
  return builder


def prepared_builder(data_config, splits=()) -> tfds.core.DatasetBuilder:
  """``check_prepared`` for ``config.data`` (its name, data_dir and synthetic settings)."""
  synthetic = data_config.get('synthetic') if hasattr(data_config, 'get') else None
  return check_prepared(data_config.name, data_config.data_dir, splits, synthetic)


@dataclasses.dataclass(frozen=True)
class DatasetFeatures:
  """Which features of a classification dataset the pipelines read."""
  kind: str  # 'video' or 'image'.
  input_key: str  # Feature holding the frames or the image.
  label_key: str  # Feature holding the class.
  num_classes: int  # Classes of the label feature.
  label_names: tuple[str, ...]  # The label feature's names, in label order ('0', '1', ... when it has none).
  # A multi-label dataset: the label feature is a Sequence of ClassLabel (an example's classes, any number of
  # them); batches carry it as a multi-hot float32 row of num_classes, trained with per-class sigmoids and
  # evaluated by mean average precision.
  multi_label: bool = False
  # A feature of action intervals (a Sequence of {label, start, end} in seconds, with the stored frames' rate in
  # 'frame_rate'; Charades): training clips are labelled with the actions they overlap (``clip_labels``), not with
  # the example's label. None for every other dataset.
  actions_key: Optional[str] = None


def dataset_features(builder: tfds.core.DatasetBuilder) -> DatasetFeatures:
  """The video (or image) and label features of ``builder``'s dataset; raises if it is not a classification set."""
  features = builder.info.features
  kind = key = None
  for k, f in features.items():
    if isinstance(f, tfds.features.Video):
      kind, key = 'video', k
      break
  if key is None:
    for k, f in features.items():
      if isinstance(f, tfds.features.Image):
        kind, key = 'image', k
        break
  if key is None:
    raise ValueError(f'Dataset {builder.name!r} has neither a Video nor an Image feature: use a video or image '
                     'classification dataset.')
  label_key = 'label' if 'label' in features else (builder.info.supervised_keys or (None, None))[1]
  label = features[label_key] if label_key in features else None
  multi_label = isinstance(label, tfds.features.Sequence) and isinstance(label.feature, tfds.features.ClassLabel)
  if multi_label:
    label = label.feature
  if not isinstance(label, tfds.features.ClassLabel):
    raise ValueError(f'Dataset {builder.name!r} has no ClassLabel "label" feature (nor a Sequence of ClassLabel, '
                     'for multi-label): use a classification dataset.')
  return DatasetFeatures(kind, key, label_key, label.num_classes, tuple(label.names), multi_label,
                         _actions_key(features) if multi_label else None)


def _actions_key(features) -> Optional[str]:
  """The feature holding action intervals with their frame rate (see DatasetFeatures.actions_key), or None."""
  if 'frame_rate' not in features:
    return None
  for k, f in features.items():
    if (isinstance(f, tfds.features.Sequence) and isinstance(f.feature, tfds.features.FeaturesDict)
        and {'label', 'start', 'end'} <= set(f.feature.keys())):
      return k
  return None


def num_classes(data_config, builder: Optional[tfds.core.DatasetBuilder] = None) -> int:
  """Number of classes of ``config.data``'s dataset (read from its prepared metadata)."""
  builder = builder or prepared_builder(data_config)
  return dataset_features(builder).num_classes


def class_names(data_config, builder: Optional[tfds.core.DatasetBuilder] = None) -> Optional[tuple[str, ...]]:
  """Names of ``config.data``'s classes in label order, for result files and plots; None if it has only numbers.

  The synthetic benchmark's names come from its task (its stored labels are plain numbers, and stay so that
  prepared copies keep loading): ('different', 'same') for same_different, '0'..'9' for sum_mod10.
  """
  builder = builder or prepared_builder(data_config)
  if builder.name == 'synthetic_long_range':
    return synthetic_lib.CLASS_NAMES[builder.builder_config.task]
  names = dataset_features(builder).label_names
  return None if names == tuple(str(i) for i in range(len(names))) else names
