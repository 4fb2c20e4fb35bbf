"""A synthetic video benchmark whose labels need long-range (across-time) dependencies.

Each clip has ``num_frames`` frames (default 8) of ``size``×``size`` pixels (default 32) of noise and distractor
strokes. Two handwritten digits from scikit-learn's bundled 8×8 digits (no download) appear in two distant
frames: the first in the first quarter of the clip, the second in the last quarter, each at a random position.
The label depends on both digits:

- ``same_different``: 1 if the two digits are of the same class, else 0 (balanced: half of each). With
  ``same='image'`` a 'same' pair shows one digit image twice (at two places, under independent noise), a
  'different' pair still two digits of different classes: a relation a network can pick up from the pair labels
  without first having to learn what a digit class is (with ``same='class'`` it must learn both at once, which
  takes far longer than a CPU-sized run: see configs/synthetic_nl.py);
- ``sum_mod10``: (d1 + d2) mod 10;
- ``unpaired_digits`` (multi-label, 10 classes): four digits, one in each of the first two frames and of the last
  two. Each first-half digit comes back in the second half (the same image, at another place under other noise)
  with probability 1/2; the second half's other digits are of classes the first half does not show. The label
  holds the classes seen in one half only (those that left and those that came): 0, 2 or 4 of the 10 classes.

Train, validation and test draw their digits from disjoint sets of digit images, so a model must recognise
digits, not memorise images. Everything is generated locally and deterministically from the config's seed::

  python -m nonlocal_jax.data.prepare synthetic_long_range/same_different --data_dir=DIR

Why it needs long range. (``unpaired_digits``: class k is on when it is in exactly one half, an exclusive or of
"k in the first half" and "k in the second half", which no sum of one term per half decides; a C2D network can
only rank clips by how often k appears, putting the clips where k came back, its negatives, with or above those
where it did not.) A C2D network applies the same 2D network to every frame and relates frames only
through its final global average pool and linear classifier: its logits are ``W · mean_t f(x_t) + b``, a *sum*
of one term per frame, so the logit difference between two classes is ``u(d1) + v(d2) + rest``. No such sum
decides these labels: for ``same_different``, same(a, a) > 0 and same(b, b) > 0 would need u(a) + v(a) + u(b) +
v(b) > 0, while different(a, b) < 0 and different(b, a) < 0 need the same sum to be < 0; ``sum_mod10`` contains
the same contradiction (digits 0 and 5: (0, 0) and (5, 5) give 0, (0, 5) and (5, 0) give 5). A C2D model can
therefore do no better than a fixed guess on part of the inputs, while a non-local block, whose response at a
position is a weighted sum over all positions of all frames, lets the position of one digit read the other.

The argument holds when nothing before the global pool sees both digit frames at once: the temporal receptive
field of the network's pooling layers must be shorter than the gap between the digit frames (at least half a
clip). The official 8×8 C2D layout (temporal pool of 2 frames) satisfies it at T = 8; the 32×2 layout's two
temporal max pools span 7 frames, so use T ≥ 16 with it. The 32×2 layout's conv1 has temporal stride 2 and a
temporal kernel of 1: it never sees odd frames, so use a model with temporal stride 1 in its stem here.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from nonlocal_jax.data import _compat

TASKS = ('same_different', 'sum_mod10', 'unpaired_digits')
# Tasks whose label is a set of classes (a Sequence of ClassLabel: multi-hot in the batches).
MULTI_LABEL_TASKS = ('unpaired_digits',)
# Names of each task's classes in label order (the stored labels are plain numbers: same_different's 1 is 'same').
CLASS_NAMES = {'same_different': ('different', 'same'), 'sum_mod10': tuple(str(i) for i in range(10)),
               'unpaired_digits': tuple(str(i) for i in range(10))}
# Digits per clip of each task.
NUM_DIGITS = {'same_different': 2, 'sum_mod10': 2, 'unpaired_digits': 4}
SAME_MODES = ('class', 'image')  # What a 'same' pair of same_different shares (SyntheticConfig.same).
_SPLITS = ('train', 'validation', 'test')
# Share of the 1,797 digit images given to each split; disjoint so that test digits were never seen in training.
_DIGIT_POOL_SHARES = (0.6, 0.2, 0.2)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Generation settings; everything that changes the data is here, so a config name identifies one dataset."""
  task: str = 'same_different'  # 'same_different' (2 classes), 'sum_mod10' (10), 'unpaired_digits' (10, multi-label).
  num_frames: int = 8  # Frames per clip (T).
  size: int = 32  # Frame height and width in pixels.
  digit_size: int = 12  # Side of a digit after upscaling the 8×8 original.
  noise_std: float = 20.0  # Standard deviation of the Gaussian pixel noise (0-255 scale).
  num_distractors: int = 2  # Random strokes drawn in every frame, so that "something is there" is no cue.
  # same_different: what 'same' means. 'class': two different images of one digit class (the network must learn
  # what a digit class is from the pair labels alone); 'image': the same digit image twice, at another place under
  # other noise (a "has this object come back?" relation; different pairs are still of different classes).
  same: str = 'class'
  num_train: int = 4000  # Clips in the train split.
  num_validation: int = 500  # Clips in the validation split.
  num_test: int = 1000  # Clips in the test split.
  seed: int = 0  # Seed of the generation (clips and the split of digit images).


def synthetic_config(task: str = 'same_different', **overrides) -> SyntheticConfig:
  """A config for ``task`` with some settings changed; its name lists the changes (e.g. 'sum_mod10_t16_s48').

  Pass it to ``tfds.builder('synthetic_long_range', config=..., data_dir=...)`` to build or read that variant.
  """
  if task not in TASKS:
    raise ValueError(f'Unknown synthetic task {task!r}: use one of {TASKS}.')
  short = {'num_frames': 't', 'size': 's', 'digit_size': 'd', 'noise_std': 'noise', 'num_distractors': 'distr',
           'same': 'same',
           'num_train': 'ntrain', 'num_validation': 'nval', 'num_test': 'ntest', 'seed': 'seed'}
  defaults = SyntheticConfig(name='defaults')
  unknown = set(overrides) - set(short)
  if unknown:
    raise ValueError(f'Unknown synthetic settings {sorted(unknown)}: use some of {sorted(short)}.')
  if overrides.get('same', 'class') not in SAME_MODES:
    raise ValueError(f"Unknown synthetic setting same={overrides['same']!r}: use one of {SAME_MODES}.")
  parts = [task] + [f'{short[k]}{overrides[k]}' if k == 'same' else f'{short[k]}{overrides[k]:g}' for k in short
                    if k in overrides and overrides[k] != getattr(defaults, k)]
  return SyntheticConfig(name='_'.join(parts), task=task, description=f'Long-range synthetic task {task}.',
                         **overrides)


def builder_config(task: str, settings: Any = None) -> SyntheticConfig | str:
  """The ``config=`` of ``tfds.builder('synthetic_long_range', ...)`` for ``task`` with generation ``settings``.

  ``settings`` (``config.data.synthetic``, or the prepare command's flags) maps setting names to values; None
  and default values change nothing. Returns the registered config's name (``task``) when nothing changes, else
  the named variant of ``synthetic_config``.
  """
  settings = dict(settings.items()) if hasattr(settings, 'items') else dict(settings or {})
  defaults = SyntheticConfig(name='defaults')
  overrides = {k: v for k, v in settings.items() if v is not None and getattr(defaults, k) != v}
  return synthetic_config(task, **overrides) if overrides else task


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def digit_pools(seed: int) -> dict[str, np.ndarray]:
  """Indices into scikit-learn's digits for each split: disjoint, each class spread over all three."""
  _, targets = _digits()
  rng = np.random.default_rng([seed, 7919])
  pools = {s: [] for s in _SPLITS}
  for c in range(10):
    members = rng.permutation(np.flatnonzero(targets == c))
    bounds = np.round(np.cumsum((0,) + _DIGIT_POOL_SHARES) * len(members)).astype(int)
    for i, s in enumerate(_SPLITS):
      pools[s].extend(members[bounds[i]:bounds[i + 1]].tolist())
  return {s: np.sort(np.array(v)) for s, v in pools.items()}


def _upscale(image: np.ndarray, size: int) -> np.ndarray:
  # Nearest-neighbour upscaling keeps the strokes crisp and needs no image library.
  rows = (np.arange(size) * image.shape[0]) // size
  cols = (np.arange(size) * image.shape[1]) // size
  return image[rows][:, cols]


def _stroke(rng: np.random.Generator, size: int) -> np.ndarray:
  # A straight stroke of random length and direction: digit-like ink that is not a digit.
  canvas = np.zeros((size, size), np.float32)
  y0, x0 = rng.uniform(0, size, 2)
  angle = rng.uniform(0, np.pi)
  length = rng.uniform(size / 6, size / 3)
  t = np.linspace(0, 1, int(length) * 2 + 2)
  ys = np.clip((y0 + t * length * np.sin(angle)).astype(int), 0, size - 1)
  xs = np.clip((x0 + t * length * np.cos(angle)).astype(int), 0, size - 1)
  canvas[ys, xs] = 1.0
  if size > 8:  # Thicken to about a digit stroke's width.
    canvas[np.minimum(ys + 1, size - 1), xs] = 1.0
  return canvas


def generate_clip(config: SyntheticConfig, split: str, index: int) -> dict[str, np.ndarray]:
  """Generates clip ``index`` of ``split``: the same arguments always give the same clip.

  Returns the uint8 video (T, size, size, 3), the label (a class; for ``unpaired_digits`` the sorted int64 array
  of its classes) and what decides it: the digit classes (``NUM_DIGITS`` of the task), their indices into
  scikit-learn's digits, the frames they are in and their top-left positions (y, x).
  """
  images, targets = _digits()
  pool = digit_pools(config.seed)[split]
  # One generator per clip, seeded by (seed, split, index): clips are independent of generation order.
  rng = np.random.default_rng([config.seed, _SPLITS.index(split), index])
  by_class = [pool[targets[pool] == c] for c in range(10)]
  if config.task == 'unpaired_digits':
    classes, indices, frames = _unpaired_digits(rng, by_class, config.num_frames)
    return _render(config, rng, images, classes, indices, frames,
                   label_from_digits(config.task, classes))
  if config.task == 'same_different':
    same = index % 2 == 0  # Alternating labels make every split exactly balanced (up to one clip).
    c1 = int(rng.integers(10))
    c2 = c1 if same else int((c1 + rng.integers(1, 10)) % 10)
  else:
    c1, c2 = int(rng.integers(10)), int(rng.integers(10))
  i1 = int(rng.choice(by_class[c1]))
  if c1 == c2 and config.task == 'same_different' and config.same == 'image':
    i2 = i1
  elif c1 == c2:
    i2 = int(rng.choice(by_class[c2][by_class[c2] != i1]))
  else:
    i2 = int(rng.choice(by_class[c2]))
  t = config.num_frames
  quarter = max(1, t // 4)
  frames = np.array([rng.integers(0, quarter), rng.integers(t - quarter, t)])
  label = int(c1 == c2) if config.task == 'same_different' else (c1 + c2) % 10
  return _render(config, rng, images, np.array([c1, c2]), np.array([i1, i2]), frames, label)


def _unpaired_digits(rng: np.random.Generator, by_class: list[np.ndarray], num_frames: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """unpaired_digits' four digits: classes, image indices and frames (0, 1 and the last two)."""
  first = rng.choice(10, size=2, replace=False)
  first_images = np.array([rng.choice(by_class[c]) for c in first])
  stays = rng.random(2) < 0.5
  # The digits that do not come back are replaced by digits of classes the first half does not show, so that a
  # class is in both halves exactly when its image came back.
  others = rng.choice(np.setdiff1d(np.arange(10), first), size=int((~stays).sum()), replace=False)
  second = np.concatenate([first[stays], others])
  second_images = np.concatenate([first_images[stays], [rng.choice(by_class[c]) for c in others]]).astype(np.int64)
  order = rng.permutation(2)
  classes = np.concatenate([first, second[order]])
  indices = np.concatenate([first_images, second_images[order]])
  return classes, indices, np.array([0, 1, num_frames - 2, num_frames - 1])


def _render(config: SyntheticConfig, rng: np.random.Generator, images: np.ndarray, classes: np.ndarray,
            indices: np.ndarray, frames: np.ndarray, label) -> dict[str, np.ndarray]:
  """The clip of ``generate_clip``: noise, distractor strokes and each digit in its frame at a random place."""
  t, s, d = config.num_frames, config.size, config.digit_size
  positions = rng.integers(0, s - d + 1, size=(len(frames), 2))
  ink = np.zeros((t, s, s), np.float32)
  for frame in range(t):
    for _ in range(config.num_distractors):
      ink[frame] = np.maximum(ink[frame], _stroke(rng, s))
  for k, (idx, frame) in enumerate(zip(indices, frames)):
    y, x = positions[k]
    patch = ink[frame, y:y + d, x:x + d]
    ink[frame, y:y + d, x:x + d] = np.maximum(patch, _upscale(images[idx], d))
  video = 20.0 + 200.0 * ink + rng.normal(0.0, config.noise_std, size=ink.shape)
  video = np.clip(np.round(video), 0, 255).astype(np.uint8)
  return {
      'video': np.repeat(video[..., None], 3, axis=-1),
      'label': label,
      'digit_classes': np.asarray(classes, np.int64),
      'digit_indices': np.asarray(indices, np.int64),
      'digit_frames': np.asarray(frames, np.int64),
      'digit_positions': positions.astype(np.int64),
  }


def label_from_digits(task: str, classes):
  """The label the task assigns to the digit classes (what the tests check the stored labels against): a class,
  or for ``unpaired_digits`` the sorted int64 array of the classes in exactly one half (first two, last two)."""
  if task == 'unpaired_digits':
    return np.setxor1d(np.asarray(classes[:2]), np.asarray(classes[2:])).astype(np.int64)
  c1, c2 = int(classes[0]), int(classes[1])
  return int(c1 == c2) if task == 'same_different' else (c1 + c2) % 10


class SyntheticLongRange(_compat.LocalCodePath, _compat.LocalPreparationMessages, tfds.core.GeneratorBasedBuilder):
  """TFDS builder of the long-range synthetic benchmark (see the module docstring); generated locally."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Two sklearn digits in the first and last quarter of a clip; noise and strokes.'}
  BUILDER_CONFIGS = [
      SyntheticConfig(name='same_different', task='same_different',
                      description='Are the two digits of the same class? (2 balanced classes)'),
      SyntheticConfig(name='sum_mod10', task='sum_mod10', description='(d1 + d2) mod 10 (10 classes)'),
      SyntheticConfig(name='unpaired_digits', task='unpaired_digits',
                      description='Which digit classes are in one half of the clip only? (10 classes, multi-label)'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    num_classes = 2 if c.task == 'same_different' else 10
    n = NUM_DIGITS.get(c.task, 2)
    label = tfds.features.ClassLabel(num_classes=num_classes)
    if c.task in MULTI_LABEL_TASKS:
      label = tfds.features.Sequence(label)  # Its classes, any number of them: multi-hot in the batches.
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # PNG: lossless, so the stored digits are exactly the generated ones.
            'video': tfds.features.Video(shape=(c.num_frames, c.size, c.size, 3), encoding_format='png'),
            'label': label,
            'digit_classes': tfds.features.Tensor(shape=(n,), dtype=np.int64),
            'digit_indices': tfds.features.Tensor(shape=(n,), dtype=np.int64),
            'digit_frames': tfds.features.Tensor(shape=(n,), dtype=np.int64),
            'digit_positions': tfds.features.Tensor(shape=(n, 2), dtype=np.int64),
        }),
        supervised_keys=('video', 'label'),
        metadata=tfds.core.MetadataDict(task=c.task, seed=c.seed),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the digits ship with scikit-learn.
    c = self.builder_config
    if c.task not in TASKS:
      raise ValueError(f'Unknown synthetic task {c.task!r}: use one of {TASKS}.')
    if min(c.size, c.num_frames) < 1 or c.digit_size > c.size:
      raise ValueError(f'Synthetic config {c.name}: need num_frames >= 1 and digit_size <= size.')
    if c.task == 'unpaired_digits' and c.num_frames < NUM_DIGITS[c.task]:
      raise ValueError(f'Synthetic config {c.name}: task {c.task} puts one digit in each of '
                       f'{NUM_DIGITS[c.task]} frames: set num_frames to at least {NUM_DIGITS[c.task]}.')
    counts = {'train': c.num_train, 'validation': c.num_validation, 'test': c.num_test}
    return {split: self._generate_examples(split, n) for split, n in counts.items() if n > 0}

  def _generate_examples(self, split: str, count: int):
    for index in range(count):
      example = generate_clip(self.builder_config, split, index)
      example['video'] = [_png(frame) for frame in example['video']]
      yield index, example


def _png(frame: np.ndarray) -> bytes:
  # PIL encodes a small frame about ten times faster than TFDS's TensorFlow encoder; level 1 because these
  # noisy frames hardly compress anyway.
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()
