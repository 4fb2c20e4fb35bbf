"""tf.data input pipelines over TFDS: training clips, multi-view test views, fast validation, and images.

Any TFDS dataset works by name: video datasets (the first ``tfds.features.Video`` feature is the video: the local
``kinetics400``/``600``/``700`` and ``synthetic_long_range/...`` builders of this package, ``ucf101``, ...) and
image datasets (the first ``tfds.features.Image``: ``cifar10``, ``imagenet2012``, ``imagenette``, ...). The
settings come from ``config.data`` (documented in ``configs/default.py``).

What a batch is (NumPy arrays, ready for ``jax.device_put``):

- training, video: ``clips`` float32 (B, T, H, W, 3), ``label`` int32 (B,);
- training, image: ``image`` float32 (B, H, W, 3), ``label`` int32 (B,);
- evaluation adds ``mask`` bool (B,) (False on padding), and for videos ``video_id`` int32 (B,) (one id per
  video, shared by all its views, unique across processes) and ``view_index`` int32 (B,) (clip × crops + crop);
  for images ``image_id``.

B is the per-process batch, ``global_batch_size / jax.process_count()``; with ``batch_layout='devices'`` every
array gets a leading device axis instead: (local_devices, B / local_devices, ...), the layout of a pmap-style
step. The default ``'flat'`` suits ``jax.make_array_from_process_local_data`` and ``shard_map`` over a 1-D mesh.

Guarantees: the stream of batches is a function of the seed and the process layout (augmentation seeds are
stateless, derived from each example's position in the stream, so parallel maps cannot reorder randomness); each
process reads its own contiguous share of the split (``tfds.even_splits``); within an epoch, every example is
read once; evaluation covers every example and pads its last batch (``mask`` False) instead of dropping it, and
every process yields the same number of eval batches, so collective steps never hang on an uneven split.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from nonlocal_jax import paths
from nonlocal_jax.data import sampling

AUTOTUNE = tf.data.AUTOTUNE

# The official code's input normalisation: pixels on 0-255, (x - 114.75) / 57.375.
OFFICIAL_MEAN = 114.75
OFFICIAL_STD = 57.375

# Names this package accepts besides TFDS's own: the Kinetics releases by their usual names.
ALIASES = {'kinetics400': 'kinetics/400', 'kinetics600': 'kinetics/600', 'kinetics700': 'kinetics/700',
           'synthetic_long_range': 'synthetic_long_range/same_different'}


class DatasetNotPreparedError(FileNotFoundError):
  """The dataset has not been prepared in the data directory; the message gives the command that prepares it."""


def resolve_name(name: str) -> str:
  """The TFDS name for ``name`` ('kinetics400' → 'kinetics/400'); other names are returned unchanged."""
  return ALIASES.get(name, name)


def _register_local_builders() -> None:
  # Importing the modules registers their builders with TFDS under 'kinetics' and 'synthetic_long_range'.
  from nonlocal_jax.data import kinetics, synthetic  # pylint: disable=g-import-not-at-top,unused-import


def prepare_command(name: str, data_dir: Optional[str]) -> str:
  """The shell command that prepares ``name`` in ``data_dir``."""
  where = data_dir or '~/tensorflow_datasets'
  full = resolve_name(name)
  if full.startswith('kinetics/'):
    command = f'python -m nonlocal_jax.data.prepare kinetics{full.split("/")[1]} --videos=DIR --annotations=DIR'
    if paths.is_remote(where):
      # Decoding needs the videos and a local cache, so Kinetics is prepared on a disk and then copied.
      return f'{command} --data_dir=LOCAL_DIR && gsutil -m rsync -r LOCAL_DIR {where}'
    return f'{command} --data_dir={where}'
  return f'python -m nonlocal_jax.data.prepare {name} --data_dir={where}'


def get_builder(name: str, data_dir: Optional[str] = None, synthetic: Any = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder for ``name`` in ``data_dir`` (local or gs://); never downloads, never prepares.

  TFDS's own bucket of prepared datasets is not looked in (``try_gcs=False``). ``synthetic``
  (``config.data.synthetic``) changes the generation settings of ``synthetic_long_range/<task>``; settings left
  at their defaults keep the registered config.
  """
  _register_local_builders()
  full = resolve_name(name)
  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)  # Leaves gs:// paths alone, which TFDS reads itself.
  if full.startswith('synthetic_long_range') and synthetic is not None:
    from nonlocal_jax.data import synthetic as synthetic_lib  # pylint: disable=g-import-not-at-top
    task = full.split('/')[1] if '/' in full else 'same_different'
    defaults = synthetic_lib.SyntheticConfig(name='defaults')
    settings = dict(synthetic.items()) if hasattr(synthetic, 'items') else dict(synthetic)
    overrides = {k: v for k, v in settings.items() if getattr(defaults, k) != v}
    if overrides:
      config = synthetic_lib.synthetic_config(task, **overrides)
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


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
  """Where this process stands among the hosts of a run, and how many devices it feeds."""
  index: int  # jax.process_index().
  count: int  # jax.process_count().
  local_devices: int  # jax.local_device_count().

  @classmethod
  def from_jax(cls, index=None, count=None, local_devices=None) -> 'ProcessLayout':
    """The layout of the current JAX run, with any field overridden (tests pretend to be other hosts)."""
    if index is None or count is None or local_devices is None:
      import jax  # pylint: disable=g-import-not-at-top
      index = jax.process_index() if index is None else index
      count = jax.process_count() if count is None else count
      local_devices = jax.local_device_count() if local_devices is None else local_devices
    return cls(int(index), int(count), int(local_devices))


def local_batch_size(global_batch_size: int, layout: ProcessLayout, field: str = 'global_batch_size') -> int:
  """The per-process batch; raises if the global batch does not split evenly over all devices."""
  devices = layout.count * layout.local_devices
  if global_batch_size < 1 or global_batch_size % devices:
    raise ValueError(f'config.data.{field}={global_batch_size} must be a positive multiple of the {devices} '
                     'devices of this run: change it to a multiple.')
  return global_batch_size // layout.count


@dataclasses.dataclass(frozen=True)
class _Features:
  kind: str  # 'video' or 'image'.
  input_key: str  # Feature holding the frames or the image.
  label_key: str  # Feature holding the class.
  num_classes: int


def _features(builder: tfds.core.DatasetBuilder) -> _Features:
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
  if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
    raise ValueError(f'Dataset {builder.name!r} has no ClassLabel "label" feature: use a classification dataset.')
  return _Features(kind, key, label_key, features[label_key].num_classes)


def num_classes(data_config, builder: Optional[tfds.core.DatasetBuilder] = None) -> int:
  """Number of classes of ``config.data``'s dataset (read from its prepared metadata)."""
  builder = builder or check_prepared(data_config.name, data_config.data_dir, synthetic=_synthetic(data_config))
  return _features(builder).num_classes


def _synthetic(data_config):
  return data_config.get('synthetic') if hasattr(data_config, 'get') else None


def _validate(c, kind: str) -> None:
  video = kind == 'video'
  checks = [
      (c.num_frames >= 1, 'num_frames', 'at least 1'),
      (c.frame_stride >= 1, 'frame_stride', 'at least 1'),
      (c.train_short_side_min <= c.train_short_side_max, 'train_short_side_min', 'at most train_short_side_max'),
      (c.crop_size <= c.train_short_side_min, 'crop_size', 'at most train_short_side_min'),
      (c.crop_size <= c.test_short_side, 'crop_size', 'at most test_short_side'),
      (not video or c.test_crop_size <= c.test_short_side, 'test_crop_size', 'at most test_short_side'),
      (c.test_num_clips >= 1 and c.test_num_crops >= 1, 'test_num_clips', 'and test_num_crops at least 1'),
      (c.normalization in ('official', 'mean_std', 'none'), 'normalization', "'official', 'mean_std' or 'none'"),
      (c.batch_layout in ('flat', 'devices'), 'batch_layout', "'flat' or 'devices'"),
  ]
  for ok, field, need in checks:
    if not ok:
      raise ValueError(f'config.data.{field} must be {need}: fix it in the config.')


def _normalize(x: tf.Tensor, c) -> tf.Tensor:
  x = tf.cast(x, tf.float32)
  if c.normalization == 'official':
    return (x - OFFICIAL_MEAN) / OFFICIAL_STD
  if c.normalization == 'mean_std':
    return (x - tf.constant(c.mean, tf.float32)) / tf.constant(c.std, tf.float32)
  return x


def _decode_frames(encoded: tf.Tensor) -> tf.Tensor:
  """Decodes a vector of JPEG/PNG frames into uint8 (T, H, W, 3); only the frames a clip needs are decoded."""
  return tf.map_fn(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False), encoded,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _resize_short(frames: tf.Tensor, short_side) -> tf.Tensor:
  shape = tf.shape(frames)
  new_h, new_w = sampling.tf_scaled_size(shape[-3], shape[-2], short_side)
  return tf.image.resize(frames, tf.stack([new_h, new_w]), method='bilinear')


def _seed_stream(seed: int, layout: ProcessLayout) -> tf.Tensor:
  return tf.constant([seed, layout.index], tf.int64)


def _read(builder, split: str, layout: ProcessLayout, *, shuffle: bool, seed: int, features: _Features):
  """This process's share of ``split`` and its size (and the largest share of any process)."""
  splits = tfds.even_splits(split, n=layout.count) if layout.count > 1 else [split]
  own = splits[layout.index]
  decoders = {features.input_key: tfds.decode.SkipDecoding()} if features.kind == 'video' else None
  read_config = tfds.ReadConfig(shuffle_seed=seed + 1000003 * layout.index, try_autocache=False)
  ds = builder.as_dataset(split=own, shuffle_files=shuffle, decoders=decoders, read_config=read_config)
  try:
    sizes = [builder.info.splits[s].num_examples for s in splits]
  except (KeyError, ValueError):  # Split sizes unknown (mocked data): count what this process reads.
    sizes = [int(ds.cardinality())] * layout.count
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds, sizes[layout.index], max(sizes)


def create_train_iterator(data_config, *, seed: int, split: Optional[str] = None,
                          layout: Optional[ProcessLayout] = None, start_batch: int = 0
                          ) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator of training batches of ``config.data`` (video clips or images), for this process.

  Clips: ``num_frames`` frames every ``frame_stride`` from a random window (short videos loop), shorter side
  scaled to a random size in [train_short_side_min, train_short_side_max], a random ``crop_size`` square, a
  random horizontal flip, then normalisation. Images: the same without the time axis.

  ``start_batch`` resumes the stream: the iterator yields exactly what a fresh one yields after that many
  batches (the examples before it are read but not decoded), so a resumed run sees the same data.
  """
  c = data_config
  layout = layout or ProcessLayout.from_jax()
  batch = local_batch_size(c.global_batch_size, layout)
  split = split or c.train_split
  builder = check_prepared(c.name, c.data_dir, [split], _synthetic(c))
  features = _features(builder)
  _validate(c, features.kind)
  ds, _, _ = _read(builder, split, layout, shuffle=True, seed=seed, features=features)
  decoded = bool(c.get('cache_decoded', False)) and features.kind == 'video'
  if decoded:
    # Small datasets only: every frame is decoded once and kept in memory, so later epochs decode nothing.
    key = features.input_key
    ds = ds.map(lambda ex: {**ex, key: _decode_frames(ex[key])}, num_parallel_calls=AUTOTUNE,
                deterministic=True).cache()
  # Shuffle before repeat: epochs stay whole (each example once per epoch), and the order changes each epoch.
  ds = ds.shuffle(c.shuffle_buffer, seed=seed + 7 * layout.index, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate()
  if start_batch:
    # Skipping before the map keeps each example's stream index, hence its augmentation seed, unchanged.
    ds = ds.skip(int(start_batch) * batch)
  base_seed = _seed_stream(seed, layout)

  def transform(index, example):
    example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    if features.kind == 'video':
      out = {'clips': _train_clip(example[features.input_key], example_seed, c, decoded)}
    else:
      out = {'image': _train_image(example[features.input_key], example_seed, c)}
    out['label'] = tf.cast(example[features.label_key], tf.int32)
    return out

  ds = ds.map(transform, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch, drop_remainder=True).prefetch(c.prefetch_batches)
  return _numpy_batches(ds, c.batch_layout, layout)


def _train_clip(video: tf.Tensor, seed: tf.Tensor, c, decoded: bool = False) -> tf.Tensor:
  seeds = tf.random.experimental.stateless_split(seed, 4)
  indices = sampling.tf_train_clip_indices(tf.shape(video)[0], c.num_frames, c.frame_stride, seeds[0])
  frames = tf.gather(video, indices) if decoded else _decode_frames(tf.gather(video, indices))
  return _augment(frames, seeds[1:], c, time_axis=True)


def _train_image(image: tf.Tensor, seed: tf.Tensor, c) -> tf.Tensor:
  seeds = tf.random.experimental.stateless_split(seed, 3)
  return _augment(image, seeds, c, time_axis=False)


def _augment(frames: tf.Tensor, seeds: tf.Tensor, c, time_axis: bool) -> tf.Tensor:
  short = tf.random.stateless_uniform([], seeds[0], minval=c.train_short_side_min,
                                      maxval=c.train_short_side_max + 1, dtype=tf.int32)
  frames = _resize_short(frames, short)
  shape = tf.shape(frames)
  offset = sampling.tf_random_crop_offset(shape[-3], shape[-2], c.crop_size, seeds[1])
  frames = frames[..., offset[0]:offset[0] + c.crop_size, offset[1]:offset[1] + c.crop_size, :]
  if c.random_flip:
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[-2]), lambda: frames)
  frames = _normalize(frames, c)
  lead = [c.num_frames] if time_axis else []
  return tf.ensure_shape(frames, lead + [c.crop_size, c.crop_size, 3])


class EvalDataset:
  """One pass over an evaluation split per ``iter()``: every view of every example once, padded at the end.

  Attributes:
    num_batches: batches per pass, the same on every process.
    views_per_example: views each video gives (clips × crops; 1 for images and validation mode).
    num_examples: videos (or images) this process evaluates.
    batch_size: per-process batch.
  """

  def __init__(self, ds: tf.data.Dataset, *, num_batches: int, views_per_example: int, num_examples: int,
               batch_size: int, batch_layout: str, layout: ProcessLayout):
    self._ds = ds
    self.num_batches = num_batches
    self.views_per_example = views_per_example
    self.num_examples = num_examples
    self.batch_size = batch_size
    self._batch_layout = batch_layout
    self._layout = layout

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    spec = self._ds.element_spec
    count = 0
    for batch in tfds.as_numpy(self._ds):
      count += 1
      yield _layout_batch(_pad(batch, self.batch_size), self._batch_layout, self._layout)
    # Processes with a smaller share fill with fully masked batches so that all run the same number of steps.
    while count < self.num_batches:
      count += 1
      empty = {k: np.zeros((0,) + tuple(s.shape[1:]), s.dtype.as_numpy_dtype) for k, s in spec.items()}
      yield _layout_batch(_pad(empty, self.batch_size), self._batch_layout, self._layout)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch['mask'])
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def create_eval_dataset(data_config, *, split: Optional[str] = None, mode: str = 'test',
                        layout: Optional[ProcessLayout] = None) -> EvalDataset:
  """The evaluation views of ``config.data``'s eval split for this process.

  ``mode='test'`` is the paper's protocol: ``test_num_clips`` clips evenly spaced in time (clip j starts at
  ⌊num_frames·j/K⌋, indices wrap) × ``test_num_crops`` crops of ``test_crop_size`` along the longer side after
  scaling the shorter side to ``test_short_side``; average the scores of the views that share a ``video_id``.
  ``mode='val'`` is the fast check during training: the centre clip, a centre ``crop_size`` crop. Images get one
  centre ``crop_size`` crop after scaling the shorter side to ``test_short_side``, in either mode.
  """
  c = data_config
  if mode not in ('test', 'val'):
    raise ValueError(f'Evaluation mode must be "test" or "val", got {mode!r}.')
  layout = layout or ProcessLayout.from_jax()
  batch = local_batch_size(c.eval_global_batch_size, layout, 'eval_global_batch_size')
  split = split or c.eval_split
  builder = check_prepared(c.name, c.data_dir, [split], _synthetic(c))
  features = _features(builder)
  _validate(c, features.kind)
  ds, own, largest = _read(builder, split, layout, shuffle=False, seed=0, features=features)
  ds = ds.enumerate()
  id_key = 'video_id' if features.kind == 'video' else 'image_id'

  def common(index, example):
    # Interleaved ids (local index × processes + process) are unique across processes without knowing offsets.
    return {id_key: tf.cast(index * layout.count + layout.index, tf.int32),
            'label': tf.cast(example[features.label_key], tf.int32)}

  if features.kind == 'image':
    views = 1

    def image_view(index, example):
      image = _resize_short(example[features.input_key], c.test_short_side)
      image = _center_crop(image, c.crop_size)
      return {'image': tf.ensure_shape(_normalize(image, c), [c.crop_size, c.crop_size, 3]),
              **common(index, example), 'mask': tf.constant(True)}

    ds = ds.map(image_view, num_parallel_calls=AUTOTUNE)
  elif mode == 'val':
    views = 1

    def center_view(index, example):
      encoded = example[features.input_key]
      indices = sampling.tf_center_clip_indices(tf.shape(encoded)[0], c.num_frames, c.frame_stride)
      frames = _resize_short(_decode_frames(tf.gather(encoded, indices)), c.test_short_side)
      frames = _center_crop(frames, c.crop_size)
      return {'clips': tf.ensure_shape(_normalize(frames, c), [c.num_frames, c.crop_size, c.crop_size, 3]),
              **common(index, example), 'view_index': tf.constant(0, tf.int32), 'mask': tf.constant(True)}

    ds = ds.map(center_view, num_parallel_calls=AUTOTUNE)
  else:
    views = c.test_num_clips * c.test_num_crops

    def clips_of(index, example):
      encoded = example[features.input_key]
      indices = sampling.tf_test_clip_indices(tf.shape(encoded)[0], c.num_frames, c.frame_stride,
                                              c.test_num_clips)
      info = common(index, example)
      # The encoded video is captured, not copied: its K clips are decoded in parallel by the next map.
      per_clip = tf.data.Dataset.from_tensor_slices({'indices': indices, 'clip': tf.range(c.test_num_clips)})
      return per_clip.map(lambda x: {**x, **info, 'encoded': encoded})

    def crops_of(clip):
      frames = _resize_short(_decode_frames(tf.gather(clip['encoded'], clip['indices'])), c.test_short_side)
      shape = tf.shape(frames)
      offsets = sampling.tf_crop_offsets(shape[1], shape[2], c.test_crop_size, c.test_num_crops)
      crops = tf.map_fn(lambda o: frames[:, o[0]:o[0] + c.test_crop_size, o[1]:o[1] + c.test_crop_size, :],
                        offsets, fn_output_signature=tf.float32)
      crops = tf.ensure_shape(_normalize(crops, c),
                              [c.test_num_crops, c.num_frames, c.test_crop_size, c.test_crop_size, 3])
      n = c.test_num_crops
      return {'clips': crops, 'video_id': tf.fill([n], clip['video_id']), 'label': tf.fill([n], clip['label']),
              'view_index': clip['clip'] * n + tf.range(n, dtype=tf.int32), 'mask': tf.fill([n], True)}

    ds = ds.flat_map(clips_of).map(crops_of, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
  ds = ds.batch(batch, drop_remainder=False).prefetch(c.prefetch_batches)
  num_batches = math.ceil(largest * views / batch)
  return EvalDataset(ds, num_batches=num_batches, views_per_example=views, num_examples=own, batch_size=batch,
                     batch_layout=c.batch_layout, layout=layout)


def _center_crop(frames: tf.Tensor, size: int) -> tf.Tensor:
  shape = tf.shape(frames)
  offset = sampling.tf_crop_offsets(shape[-3], shape[-2], size, 1)[0]
  return frames[..., offset[0]:offset[0] + size, offset[1]:offset[1] + size, :]


def _layout_batch(batch: dict[str, np.ndarray], batch_layout: str, layout: ProcessLayout) -> dict[str, np.ndarray]:
  if batch_layout == 'flat':
    return batch
  d = layout.local_devices
  return {k: v.reshape((d, v.shape[0] // d) + v.shape[1:]) for k, v in batch.items()}


def _numpy_batches(ds: tf.data.Dataset, batch_layout: str, layout: ProcessLayout):
  for batch in tfds.as_numpy(ds):
    yield _layout_batch(batch, batch_layout, layout)


def aggregate_views(scores: np.ndarray, video_ids: np.ndarray, mask: Optional[np.ndarray] = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Averages per-view scores over the views of each video: returns (sorted unique ids, mean scores).

  A small host-side helper for the evaluator; padded views (``mask`` False) are left out.
  """
  scores = np.asarray(scores).reshape(-1, np.shape(scores)[-1])
  video_ids = np.asarray(video_ids).reshape(-1)
  if mask is not None:
    keep = np.asarray(mask).reshape(-1).astype(bool)
    scores, video_ids = scores[keep], video_ids[keep]
  ids, inverse = np.unique(video_ids, return_inverse=True)
  sums = np.zeros((len(ids), scores.shape[-1]), np.float64)
  np.add.at(sums, inverse, scores)
  counts = np.bincount(inverse, minlength=len(ids))[:, None]
  return ids, (sums / np.maximum(counts, 1)).astype(scores.dtype)
