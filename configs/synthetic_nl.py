r"""Non-local vs C2D on the synthetic long-range benchmark (``synthetic_long_range/same_different``), on a CPU.

    python main.py --config=configs/synthetic_nl.py --workdir=/tmp/synthetic_nl
    python main.py --config=configs/synthetic_nl.py:blocks=none --workdir=/tmp/synthetic_c2d   # the C2D baseline

The label says whether the digits of two distant frames (first and last quarter of an 8-frame clip) are the same
class; a C2D network cannot do better than a fixed guess on part of the inputs (``nonlocal_jax.data.synthetic``),
a non-local block can relate the two frames. The dataset (20,000 train, 1,000 test clips of 8×24×24, 16×16 digits,
noise 10, one distractor stroke per frame) is generated into ``data.data_dir`` (default ~/tensorflow_datasets) on
first use, in about a minute; nothing is downloaded.

Model: a tiny C2D ResNet (one bottleneck per stage, width 8) with the '8x8' stem (temporal stride 1: every
frame reaches the network; its temporal pool of 2 keeps the two digit frames apart until the global pool), and
He-initialised non-local blocks (embedded Gaussian) after res3 and res4, trained with a 5x learning rate.
Arguments: ``blocks=none|res3|res4|res3res4``.

Measured (2-core AMD EPYC CPU shared with another engineer's test runs, 2-3 of these jobs at once, load ~4-7;
jax 0.10.2), 2,000 steps of 32 clips at 0.15-0.5 s per step:

  variant                          seed  time     train top-1 (last 100)  test top-1
  res3res4 (this config)           0     5.9 min  0.67                    68.1%
  res3res4 (this config)           1     -        0.50 at step 1,000      50.4% (val, step 1,000; stopped)
  none (C2D baseline)              0     6.3 min  0.53                    49.9%
  res3res4, nonlocal_scale=False   0     10.5 min 0.58                    56.3%   (alongside the test suite)
  res3res4, nonlocal_scale=False   1     7.2 min  0.66                    61.9%
  res3res4, base lr 0.1, no scale  0     10.5 min 0.51                    48.3%

The target of issue 6 (every non-local variant >= 90%) is NOT reached. The label is independent of either digit
alone, so the only gradient comes through the (zero-initialised) non-local interaction and training starts on a
plateau that seed 0 leaves after ~600 steps (val 55% at 500, 69% at 1,500) and seed 1 had not left at 1,000.
The previous settings (32×32 frames, 12-pixel digits, noise 20, 2 strokes, 4,000 train clips, width 8, official
init) memorised the train set (train 0.74) at chance on test; 16,000 clips at width 16 stayed at chance.
Still at chance when stopped: dot-product pairwise (900 steps), res4 alone without subsampling and 1x lr (500
steps), a 10x non-local lr (1,200 steps); a 20x lr on the non-local BN (seed 1, 1,400 steps).
"""

from nonlocal_jax.config_files import load_sibling

BLOCKS = {'none': 'none', 'res3': 'res3:0', 'res4': 'res4:0', 'res3res4': 'res3:0;res4:0'}



def get_config(arg=None):
  """The synthetic benchmark config; ``arg`` 'blocks=none' gives the C2D baseline."""
  config = load_sibling(__file__, 'default').get_config()
  blocks = 'res3res4'
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key != 'blocks' or value not in BLOCKS:
      raise ValueError(f'configs/synthetic_nl.py takes blocks= one of {sorted(BLOCKS)}, got {item!r}.')
    blocks = value
  m = config.model
  m.stage_sizes, m.width, m.num_classes = (1, 1, 1, 1), 8, 2
  m.stem = '8x8'
  m.nonlocal_locations = BLOCKS[blocks]
  # He-initialised theta/phi/g/W_z: the block is still the identity at initialisation (its BN scale starts at
  # 0), but its affinities are not uniform, so the same/different interaction gets a gradient from the start.
  m.nonlocal_weight_init = 'he'
  m.dropout_rate = 0.0
  m.head_window = None
  d = config.data
  d.name = 'synthetic_long_range/same_different'
  s = d.synthetic
  # 24x24 frames with 16x16 digits (an exact 2x upscale of the 8x8 originals), lighter noise and one distractor
  # stroke per frame; 20,000 training clips (no clip is seen twice in 2,000 steps of 32): the 4,000-clip
  # default was memorised (train 0.74, test chance). Still long-range: the digits are 6+ frames apart.
  s.size, s.digit_size, s.noise_std, s.num_distractors, s.num_train = 24, 16, 10.0, 1, 20000
  d.num_frames, d.frame_stride = 8, 1
  d.train_short_side_min = d.train_short_side_max = d.crop_size = 24
  d.test_short_side = d.test_crop_size = 24
  d.test_num_clips, d.test_num_crops = 1, 1
  d.random_flip = False  # Mirrored digits are other shapes.
  d.global_batch_size, d.eval_global_batch_size = 32, 100
  d.shuffle_buffer = 20000
  d.eval_split = 'test'
  t = config.train
  t.num_steps, t.base_learning_rate, t.base_batch_size = 2000, 0.05, 32
  t.schedule, t.warmup_steps = 'cosine', 50
  # The label is independent of either digit alone, so only the non-local interaction carries signal and
  # training starts on a plateau; a 5x learning rate on the non-local blocks leaves it sooner.
  t.lr_multipliers = (('nonlocal_.*', 5.0),)
  t.log_every_steps, t.checkpoint_every_steps, t.keep_checkpoints = 100, 500, 2
  t.precise_bn_batches = 20
  return config
