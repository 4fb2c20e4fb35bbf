"""Default configuration: every field of every config, documented. Other configs start from this one.

Sections: ``model`` (the network, see ``nonlocal_jax.models``), ``data`` (the dataset and input pipeline, see
``nonlocal_jax.data``), ``train`` (optimiser, schedule, checkpoints, see ``nonlocal_jax.training``) and ``multihost``
(several processes). Each section is built by its own function below so that it is documented in one place.
"""

import ml_collections

from nonlocal_jax.config_ranges import declare, flag, increasing_integers, integer, matching, number, numbers, one_of
from nonlocal_jax.config_ranges import regex, regex_multipliers, text
from nonlocal_jax.data import normalization
from nonlocal_jax.layers.family import BLOCK_KINDS
from nonlocal_jax.models.registry import nonlocal_block_config


def model_config() -> ml_collections.ConfigDict:
  """The ``config.model`` section: which network and how it is built.

  ``nonlocal_jax.models.build_model(config.model)`` builds it; every field is an attribute of the model class
  named by ``name`` (see ``ResNetVideo`` / ``ResNetImage`` for the full story). A ``resnet_image`` config
  replaces this section with the image fields
  (and ``nonlocal_block_config('resnet_image')``).
  """
  placeholder = ml_collections.config_dict.placeholder
  model = ml_collections.ConfigDict()
  model.name = 'resnet_video'  # 'resnet_video' (C2D / I3D clips) or 'resnet_image'.
  model.num_classes = 400  # Classifier outputs (Kinetics-400).
  model.depth = 50  # 50 or 101: stage sizes (3, 4, 6, 3) or (3, 4, 23, 3).
  model.stage_sizes = placeholder(tuple)  # Residual blocks in res2..res5, overriding depth (tiny networks).
  model.width = 64  # Channels of conv1 and of res2's bottleneck; stage k doubles it, outputs are 4x wider.
  model.temporal = 'c2d'  # 'c2d', 'i3d_3x1x1' (official NL I3D: inflate branch2a) or 'i3d_3x3x3'.
  model.temporal_pattern = placeholder(tuple)  # Per stage, 1 for inflated blocks; None: official use_temp_convs.
  model.stem = '32x2'  # '32x2' or '8x8' (official conv1 stride and pools) or 'table1' (the paper's pools).
  model.stem_pool_padding = 1  # pool1 spatial padding: 1 (PySlowFast) or 0 (official Caffe2, exact zoo parity).
  model.stride_in_1x1 = False  # Stride on branch2a (MSRA ResNet, the paper's FLOPs) not branch2b (official).
  # Non-local blocks: a preset ('none', '1', '5', '10', 'res2'..'res5'; docs/paper.md §3) or 'res3:1,3;res4:1,3,5'
  # (stage: indices of the residual blocks each followed by a non-local block).
  model.nonlocal_locations = 'none'
  # The options of every non-local block, one sub-dict whose keys are exactly NonLocalBlock's fields (pairwise,
  # subsample, positions, implementation, ...; each documented in nonlocal_jax/layers/nonlocal_block.py), at
  # the video defaults: embedded Gaussian, subsample (1, 2, 2), pooling before phi/g, the official init.
  # Set one on the command line with --config.model.nonlocal_block.pairwise=dot_product. Its norm None follows
  # model.norm ('batch' blocks in a BatchNorm network, 'affine' in a frozen-BN one).
  model.nonlocal_block = nonlocal_block_config('resnet_video')
  # Which block goes in those places (nonlocal_jax.layers.family.BLOCK_KINDS): 'nonlocal' (the paper's), 'gc',
  # 'apnb', 'cc', ... The spec's other keys are that block's fields: configs/kinetics_nl.py:block=gc writes the
  # spec of a kind, nonlocal_block_config('resnet_video', 'gc') makes one (README "Non-local family").
  declare(model.nonlocal_block, 'model.nonlocal_block')('kind', 'nonlocal', one_of(*BLOCK_KINDS))
  model.nonlocal_res3_temporal_groups = placeholder(int)  # Grouped non-local in res3 only (128-frame models): 4.
  model.norm = 'batch'  # 'batch' (trained BatchNorm) or 'affine' (frozen BN, the 128-frame models).
  model.bn_axis_name = placeholder(str)  # Device axis for synchronised BN ('batch'); None: per-device stats.
  model.bn_momentum = 0.9  # BatchNorm running-average momentum (official).
  model.bn_epsilon = 1e-5  # BatchNorm epsilon (official).
  model.residual_bn_init = 1.0  # Initial gamma of each residual branch's last BN (official BN_INIT_GAMMA).
  model.dropout_rate = 0.5  # Dropout before the classifier.
  model.head_window = (7, 7)  # Fully-convolutional testing: res5 average-pool window; None: fc everywhere.
  # 'auto' (the device table's choice, else 'folded' on CPU and 'native' elsewhere), 'native' 3D convs, or
  # 'folded' (2D convs over frames; same result).
  model.conv_implementation = 'auto'
  # Max pools: 'auto' (the device table's choice, else 'window'), 'window' (reduce_window) or 'slices' (same
  # values, a backward pass without scatter).
  model.pool_implementation = 'auto'
  # BatchNorm's backward pass: 'auto' ('fused' on a GPU with per-device statistics, else 'flax'), 'flax'
  # (nn.BatchNorm, differentiated automatically) or 'fused' (same values, written out in fewer passes).
  model.bn_implementation = 'auto'
  model.remat = 'none'  # Recompute in the backward pass to fit long clips: 'none', 'nonlocal', 'stages', 'all'.
  model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
  return model


def data_config() -> ml_collections.ConfigDict:
  """The ``config.data`` section: which dataset, how clips are sampled, augmented and batched.

  ``nonlocal_jax.data.create_train_iterator(config.data, seed=...)`` and ``create_eval_dataset(config.data)``
  read it; defaults are the paper's Kinetics recipe (docs/paper.md §5): 32×2 clips, scale [256, 320], 224 crops,
  10 clips × 3 crops of 256 at test time. Each ``field(name, default, range)`` line declares the field's valid
  range too, checked at start-up (``nonlocal_jax.config_ranges``).
  """
  data = ml_collections.ConfigDict()
  field = declare(data, 'data')
  # Any TFDS video or image dataset: 'kinetics400' (also 600, 700; built from local files by
  # `python -m nonlocal_jax.data.prepare`), 'synthetic_long_range/same_different' or '/sum_mod10', 'ucf101',
  # 'cifar10', 'imagenet2012', 'imagenette', ...; or 'fake': random clips and labels generated on the devices, for
  # measuring training throughput (configs/benchmark.py; nothing read, no evaluation, model.num_classes classes).
  # Multi-label: 'synthetic_long_range/unpaired_digits' (configs/synthetic_multilabel.py).
  field('name', 'kinetics400', text())
  field('data_dir', None, text(optional=True))  # TFDS data directory; None: ~/tensorflow_datasets.
  field('train_split', 'train', text())  # TFDS split (or slice, 'train[:10%]') to train on.
  field('eval_split', 'validation', text())  # Split evaluated during and after training (UCF101, CIFAR: 'test').
  # Clip sampling: num_frames frames every frame_stride stored frames (32x2 official; 8x8 for the 8-frame models).
  field('num_frames', 32, integer(1))  # Frames per clip (T).
  field('frame_stride', 2, integer(1))  # Stored frames between two clip frames (tau); a short video's end loops.
  # Training augmentation: shorter side scaled to a random size in [min, max], random square crop, flip.
  # (Across fields, checked at start-up too: crop_size ≤ train_short_side_min ≤ train_short_side_max.)
  field('train_short_side_min', 256, integer(1))  # Lower end of the random scale (pixels).
  field('train_short_side_max', 320, integer(1))  # Upper end of the random scale (pixels), inclusive.
  field('crop_size', 224, integer(1))  # Training crop; also the centre crop of 'val' mode and of image evaluation.
  # Side of the training crop cut from the scaled frame when it differs from the network's input: the device resizes
  # it to crop_size (Charades: a 224 window rescaled to 288, configs/charades_nl.py). None: crop_size, no resize.
  # (Checked at start-up too: train_crop_window ≤ train_short_side_min.)
  field('train_crop_window', None, integer(1, optional=True))
  field('random_flip', True, flag())  # Random horizontal flip (off for the synthetic digits: mirrors differ).
  # Testing (mode='test'): test_num_clips clips evenly spaced in time x test_num_crops crops along the longer side.
  field('test_short_side', 256, integer(1))  # Shorter side before the test crops (and the 'val' centre crop).
  field('test_crop_size', 256, integer(1))  # Side of each test crop (the network runs fully convolutionally).
  field('test_num_clips', 10, integer(1))  # K: clip j starts at floor(num_frames * j / K).
  field('test_num_crops', 3, integer(1))  # Crops per clip: start, centre and end of the longer side (1: centre).
  # How a video's test views make its scores: 'mean' (the paper's Kinetics test), 'max' (the official Charades
  # evaluation), or 'auto': max for multi-label datasets, mean for the others.
  field('test_view_pooling', 'auto', one_of('auto', 'mean', 'max'))
  # Normalisation of 0-255 RGB: 'official' (x - 114.75) / 57.375, 'mean_std' (x - mean) / std, or 'none'.
  field('normalization', 'official', one_of(*normalization.KINDS))
  field('mean', (123.675, 116.28, 103.53), numbers(3, 0))  # Per-channel mean (0-255) used by 'mean_std'.
  field('std', (58.395, 57.12, 57.375), numbers(3, 0, low_open=True))  # Per-channel std (0-255), 'mean_std'.
  # Batching: global batches are split evenly over processes, then devices.
  field('global_batch_size', 64, integer(1))  # Training clips per step over all devices; a multiple of them.
  field('eval_global_batch_size', 64, integer(1))  # Evaluation views per step; the last batch is padded + masked.
  # The input pipeline reads examples by position (whole epochs shuffled by the seed: no shuffle buffer) in
  # num_workers threads; memory is about (prefetch_batches + 1) batches plus one example per thread.
  field('num_workers', 0, integer(0))  # Threads that read and decode examples (0: one per core of this process).
  field('prefetch_batches', 2, integer(0))  # Batches prepared ahead of the training step (0: none).
  # Decode every training video once and keep the frames in memory: for small datasets (the synthetic benchmark,
  # ~0.3 GB), where decoding, not the model, bounds the step time on a CPU. Never for Kinetics.
  field('cache_decoded', False, flag())
  # Settings of 'synthetic_long_range' (ignored by other datasets); any change builds a separately named variant.
  data.synthetic = ml_collections.ConfigDict()
  field = declare(data.synthetic, 'data.synthetic')
  field('num_frames', 8, integer(1))  # Frames per synthetic video.
  field('size', 32, integer(1))  # Frame height and width (pixels).
  field('digit_size', 12, integer(1))  # Side of each upscaled 8x8 digit (pixels); at most size.
  field('noise_std', 20.0, number(0))  # Gaussian pixel noise (0-255 scale).
  field('num_distractors', 2, integer(0))  # Random strokes per frame.
  field('same', 'class', one_of('class', 'image'))  # same_different: a 'same' pair shares the digit class/image.
  field('num_train', 4000, integer(1))  # Training clips.
  field('num_validation', 500, integer(1))  # Validation clips.
  field('num_test', 1000, integer(1))  # Test clips.
  field('seed', 0, integer(0))  # Generation seed (clips and the disjoint split of digit images).
  return data


def train_config() -> ml_collections.ConfigDict:
  """The ``config.train`` section: optimiser, schedule, checkpoints, logging (``nonlocal_jax.training``).

  Defaults are the paper's Kinetics recipe (docs/paper.md §5): SGD with Nesterov momentum 0.9, weight decay 1e-4
  (not on BN parameters and biases), learning rate 0.01 for 64 clips per step, divided by 10 at 150k and 300k
  of 400k steps, dropout 0.5 (``config.model``). Step counts are optimiser updates of ``data.global_batch_size``
  clips. Each ``field(name, default, range)`` line declares the field's valid range, checked at start-up.
  """
  train = ml_collections.ConfigDict()
  field = declare(train, 'train')
  field('num_steps', 400_000, integer(1))  # Optimiser updates (paper: 400k at 64 clips per step).
  # Learning rate at base_batch_size clips per update (paper: 0.01 at 64); linear scaling rule:
  # lr = base_learning_rate * global_batch_size / base_batch_size (Goyal et al.).
  field('base_learning_rate', 0.01, number(0, low_open=True))
  field('base_batch_size', 64, integer(1))
  field('schedule', 'step', one_of('step', 'cosine', 'constant'))  # 'step' (× step_factor at each boundary).
  field('step_boundaries', (150_000, 300_000), increasing_integers(1))  # Updates at which 'step' changes the rate.
  field('step_factor', 0.1, number(0, 1, low_open=True))  # Multiplier applied at each boundary.
  field('warmup_steps', 0, integer(0))  # Linear warm-up from 0 over this many updates (0: none, as the paper).
  # 'sgd' (the paper: SGD + momentum) or 'adamw' (Adam, decoupled decay; not the paper).
  field('optimizer', 'sgd', one_of('sgd', 'adamw'))
  field('momentum', 0.9, number(0, 1, high_open=True))  # SGD momentum (Adam's beta1 with 'adamw').
  field('nesterov', True, flag())  # Nesterov momentum (official code; NAdam with 'adamw').
  field('weight_decay', 1e-4, number(0))  # L2 decay added to the gradient of the parameters it matches (below).
  # Regexes over parameter paths ('res3_0/branch2a_bn/scale'): decay on those that match include and not exclude.
  field('weight_decay_include', r'.*', regex())
  field('weight_decay_exclude', r'(.*_bn/.*|.*/bn/.*|.*/bias$|.*/scale$)', regex(optional=True))  # BN, biases.
  # Learning-rate multipliers: (regex, multiplier) pairs, the first match wins, e.g. (('pred/.*', 10.0),).
  field('lr_multipliers', (), regex_multipliers())
  field('freeze', None, regex(optional=True))  # Parameters kept fixed (no update, no decay), e.g. 'conv1/.*|res2_.*'.
  field('accumulation_steps', 1, integer(1))  # Micro-batches per device per update (fits 64 on fewer devices).
  field('init_checkpoint', None, text(optional=True))  # Workdir/checkpoint dir of another run, or zoo:NAME: its params.
  field('precise_bn_batches', 0, integer(0))  # After training, re-estimate BN statistics (official 200).
  field('log_every_steps', 50, integer(1))  # Metrics to TensorBoard and a console line every this many updates.
  field('checkpoint_every_steps', 1000, integer(1))  # Checkpoint every this many updates (and at the end).
  field('keep_checkpoints', 3, integer(1))  # Most recent checkpoints kept.
  field('async_checkpoints', True, flag())  # Write checkpoints in the background while training continues.
  field('eval_every_steps', 0, integer(0))  # Fast validation ('val' mode) every this many updates; 0: at the end.
  field('eval_at_end', True, flag())  # Run the multi-view test after training.
  field('auto_prepare_synthetic', True, flag())  # Generate a missing synthetic dataset at start-up.
  return train


def multihost_config() -> ml_collections.ConfigDict:
  """The ``config.multihost`` section: ``jax.distributed.initialize`` for runs over several processes.

  On a managed cluster (Cloud TPU, SLURM) set ``enabled`` and leave the rest None: JAX detects them.
  """
  multihost = ml_collections.ConfigDict()
  field = declare(multihost, 'multihost')
  field('enabled', False, flag())  # Call jax.distributed.initialize() before anything else.
  field('coordinator_address', None, matching(r'[^:\s]+:\d+', "'host:port'", optional=True))  # None: detected.
  field('num_processes', None, integer(1, optional=True))  # Processes of the run; None: detected.
  field('process_id', None, integer(0, optional=True))  # This process's index (< num_processes); None: detected.
  return multihost


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration (every field at its documented default)."""
  config = ml_collections.ConfigDict()
  field = declare(config, '')
  field('seed', 0, integer(0, 2**31, high_open=True))  # Random seed for initialisation, data order and dropout.
  config.model = model_config()
  config.data = data_config()
  config.train = train_config()
  config.multihost = multihost_config()
  field('eval_step', None, integer(0, optional=True))  # --mode=eval: checkpoint step; None: latest.
  # JAX's persistent compilation cache: a rerun with the same shapes (a resume, --mode=eval, a repeated sweep point)
  # loads its compiled programs instead of compiling them again. None: JAX's own setting (JAX_COMPILATION_CACHE_DIR,
  # off when unset). Only a directory that you alone write to: a cached program runs as code.
  field('compilation_cache_dir', None, text(optional=True))
  return config
