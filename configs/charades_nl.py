r"""Non-local networks fine-tuned on Charades (Wang et al. 2018, Table 4; docs/paper.md §4): 157 action classes,
multi-label, scored by mean average precision.

Default: NL I3D ResNet-101 with 5 non-local blocks, the paper's Table 4 model (37.5 mAP on Charades_v1_test, "val"
in the paper; I3D without blocks, ``blocks=none``: 35.5), with the paper's fine-tuning recipe: start from a
128-frame Kinetics model, 1 clip per GPU (a global batch of 8 on 8 GPUs), 200k steps, learning rate 0.00125 divided
by 10 every 75k steps (at 75k and 150k), the 224 crop window of the usual scale jitter rescaled to 288×288 for the
network, per-class sigmoid outputs (chosen from the dataset: its labels are multi-hot), tested at a single scale of
320.

    python -m nonlocal_jax.data.prepare charades --videos=DIR --annotations=DIR --data_dir=DIR
    python main.py --config=configs/charades_nl.py --workdir=/tmp/charades_nl \
        --config.data.data_dir=DIR --config.train.init_checkpoint=/tmp/kinetics_nl_128f   # a 128-frame run
    python main.py --config=configs/charades_nl.py:depth=50 --workdir=/tmp/charades_nl_r50 \
        --config.data.data_dir=DIR --config.model.stem_pool_padding=0 \
        --config.train.init_checkpoint=zoo:i3d_nonlocal_128x1                             # the official R50
    python main.py --config=configs/charades_nl.py --workdir=/tmp/charades_nl --mode=eval --config.data.data_dir=DIR

``init_checkpoint`` loads every parameter whose name and shape match (``training.checkpoint.merge_matching``): the
400-way Kinetics classifier has another shape than the 157-way one here, so the classifier starts fresh and
everything else is the Kinetics model's (the console counts them: "N loaded, 0 new, 2 with another shape"). The
official zoo has no R101 model, so the default R101 needs your own 128-frame Kinetics run; the zoo's R50
``i3d_nonlocal_128x1`` fits ``:depth=50`` with ``--config.model.stem_pool_padding=0`` (README "Official weights").
Without ``init_checkpoint`` the network trains from scratch, which is not the paper's recipe.

Training clips are labelled with the classes of the actions that overlap the clip (README "Charades",
``nonlocal_jax.data.clip_labels``); test views with all of the video's classes, and a video's scores are the maximum
over its 10 clips × 3 crops (``data.test_view_pooling='max'``, the official Charades evaluation's choice;
``--config.data.test_view_pooling=mean`` averages them). Expected result and time: NOT run here (no Charades copy,
no GPUs in this project's machines); the target is the paper's 37.5 mAP. With fewer than 8 devices keep 8 clips per
update with ``--config.train.accumulation_steps`` (e.g. 8 on one GPU; exact with frozen BN).

Where the paper is silent, and what is chosen here:

- Clip: 128 frames, every frame (128×1), as the 128-frame Kinetics models it starts from (``frames=8x8``: the 8×8
  sampling and stem, for fine-tuning an 8×8 model instead).
- BatchNorm frozen (``model.norm='affine'``), as in those models: with 1 clip per GPU, per-GPU batch statistics would
  be those of a single clip. So no precise BN. The grouped non-local of their res3 (``nonlocal_res3_temporal_groups
  =4``) is kept.
- Scale jitter: the shorter side at a random s in [256, 320], as for Kinetics; a random 224 square of it
  (``data.train_crop_window``) is resized to 288 (``data.crop_size``) on the device, and flipped at random.
- Test: 10 clips evenly spaced in time × 3 crops of 320 along the longer side of frames scaled to 320 (the Kinetics
  protocol at the paper's single scale), fully convolutional with the res5 average pool of a 288 training crop
  (``model.head_window=(9, 9)``: 288 / 32); views pooled by max.
- Optimiser: the Kinetics recipe's (SGD, Nesterov momentum 0.9, weight decay 1e-4 except BN and biases, dropout 0.5,
  no warm-up).
- Frames: prepared at the defaults (shorter side 256, at most 30 fps); ``--short_side=320`` keeps the test scale's
  pixels instead of upscaling 256 to 320.

The optional argument names a variant with configs/kinetics_nl.py's keys (arch, depth, blocks, pairwise, positions,
block, frames); the default is ``arch=i3d,depth=101,blocks=5``, e.g. ``configs/charades_nl.py:blocks=none`` for
the I3D baseline.
"""

from nonlocal_jax.config_files import load_sibling, parse_arg

DEFAULT_VARIANT = 'arch=i3d,depth=101,blocks=5'
NUM_CLASSES = 157


def get_config(arg=None):
  """configs/kinetics_nl.py's network for the variant (``DEFAULT_VARIANT`` overridden by arg), with the Charades
  data and fine-tuning recipe."""
  kinetics = load_sibling(__file__, 'kinetics_nl')
  given = parse_arg(arg, kinetics.VARIANT_KEYS, 'configs/charades_nl.py')  # Errors name this file.
  config = kinetics.get_config(','.join(filter(None, [DEFAULT_VARIANT, arg])))
  m, d, t = config.model, config.data, config.train
  m.num_classes = NUM_CLASSES
  m.norm = 'affine'  # Frozen BN, as the 128-frame Kinetics models (1 clip per GPU).
  if m.nonlocal_block.kind == 'nonlocal' and m.nonlocal_locations != 'none':
    m.nonlocal_res3_temporal_groups = 4  # The 128-frame models' grouped non-local in res3.
  m.head_window = (9, 9)  # The res5 map of a 288 training crop.
  d.name = 'charades'
  d.train_split, d.eval_split = 'train', 'test'  # Charades_v1_test.csv is the paper's "val".
  if given.get('frames', '32x2') == '32x2':
    d.num_frames, d.frame_stride = 128, 1
  d.train_short_side_min, d.train_short_side_max = 256, 320
  d.train_crop_window, d.crop_size = 224, 288  # The 224 window rescaled to 288×288.
  d.test_short_side = d.test_crop_size = 320
  d.test_num_clips, d.test_num_crops = 10, 3
  d.test_view_pooling = 'max'
  d.global_batch_size = d.eval_global_batch_size = 8  # 1 clip (or view) per GPU on 8 GPUs.
  t.num_steps = 200_000
  t.base_learning_rate, t.base_batch_size = 0.00125, 8
  t.schedule, t.step_boundaries, t.step_factor = 'step', (75_000, 150_000), 0.1
  t.precise_bn_batches = 0  # Frozen BN: no statistics to re-estimate.
  return config
