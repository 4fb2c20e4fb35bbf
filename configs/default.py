"""Default configuration: every field of every config, documented. Other configs start from this one.

Sections: ``model`` (the network, see ``nonlocal_jax.models``), ``data`` (the dataset and input pipeline, see
``nonlocal_jax.data``). Each section is built by its own function below so that it is documented in one place.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """The ``config.model`` section: which network and how it is built."""
  model = ml_collections.ConfigDict()
  return model


def data_config() -> ml_collections.ConfigDict:
  """The ``config.data`` section: which dataset, how clips are sampled, augmented and batched.

  ``nonlocal_jax.data.create_train_iterator(config.data, seed=...)`` and ``create_eval_dataset(config.data)``
  read it; defaults are the paper's Kinetics recipe (PAPER.md §5): 32×2 clips, scale [256, 320], 224 crops,
  10 clips × 3 crops of 256 at test time.
  """
  data = ml_collections.ConfigDict()
  # Any TFDS video or image dataset: 'kinetics400' (also 600, 700; built from local files by
  # `python -m nonlocal_jax.data.prepare`), 'synthetic_long_range/same_different' or '/sum_mod10', 'ucf101',
  # 'cifar10', 'imagenet2012', 'imagenette', ...
  data.name = 'kinetics400'
  data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data directory; None: ~/tensorflow_datasets.
  data.train_split = 'train'  # TFDS split (or slice, 'train[:10%]') to train on.
  data.eval_split = 'validation'  # Split evaluated during and after training (UCF101, CIFAR: 'test').
  # Clip sampling: num_frames frames every frame_stride stored frames (32x2 official; 8x8 for the 8-frame models).
  data.num_frames = 32  # Frames per clip (T).
  data.frame_stride = 2  # Stored frames between two clip frames (tau); windows past a short video's end loop.
  # Training augmentation: shorter side scaled to a random size in [min, max], random square crop, flip.
  data.train_short_side_min = 256  # Lower end of the random scale (pixels).
  data.train_short_side_max = 320  # Upper end of the random scale (pixels), inclusive.
  data.crop_size = 224  # Training crop; also the centre crop of 'val' mode and of image evaluation.
  data.random_flip = True  # Random horizontal flip (off for the synthetic digits, whose mirror images differ).
  # Testing (mode='test'): test_num_clips clips evenly spaced in time x test_num_crops crops along the longer side.
  data.test_short_side = 256  # Shorter side before the test crops (and the 'val' centre crop).
  data.test_crop_size = 256  # Side of each test crop (the paper runs the network fully convolutionally on 256).
  data.test_num_clips = 10  # K: clip j starts at floor(num_frames * j / K).
  data.test_num_crops = 3  # Crops per clip: start, centre and end of the longer side (1: the centre crop).
  # Normalisation of 0-255 RGB: 'official' (x - 114.75) / 57.375, 'mean_std' (x - mean) / std, or 'none'.
  data.normalization = 'official'
  data.mean = (123.675, 116.28, 103.53)  # Per-channel mean (0-255) used by 'mean_std' (ImageNet's).
  data.std = (58.395, 57.12, 57.375)  # Per-channel standard deviation (0-255) used by 'mean_std' (ImageNet's).
  # Batching: global batches are split evenly over processes, then devices.
  data.global_batch_size = 64  # Training clips per step over all devices (paper: 8 GPUs x 8); a multiple of them.
  data.eval_global_batch_size = 64  # Evaluation views per step over all devices; the last batch is padded + masked.
  data.batch_layout = 'flat'  # 'flat': (B, ...) per process; 'devices': (local_devices, B / local_devices, ...).
  # Decoded clips waiting in memory: each holds up to a few hundred encoded frames (~5 MB for Kinetics), so
  # shuffle_buffer bounds memory, not just randomness.
  data.shuffle_buffer = 256  # Examples in the shuffle buffer.
  data.prefetch_batches = 2  # Batches prepared ahead of the training step.
  # Settings of 'synthetic_long_range' (ignored by other datasets); any change builds a separately named variant.
  data.synthetic = ml_collections.ConfigDict()
  data.synthetic.num_frames = 8  # Frames per synthetic video.
  data.synthetic.size = 32  # Frame height and width (pixels).
  data.synthetic.digit_size = 12  # Side of each upscaled 8x8 digit (pixels).
  data.synthetic.noise_std = 20.0  # Gaussian pixel noise (0-255 scale).
  data.synthetic.num_distractors = 2  # Random strokes per frame.
  data.synthetic.num_train = 4000  # Training clips.
  data.synthetic.num_validation = 500  # Validation clips.
  data.synthetic.num_test = 1000  # Test clips.
  data.synthetic.seed = 0  # Generation seed (clips and the disjoint split of digit images).
  return data


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration (every field at its documented default)."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Random seed for parameter initialisation, data order and dropout.
  config.model = model_config()
  config.data = data_config()
  return config
