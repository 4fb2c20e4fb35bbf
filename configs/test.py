r"""The tiny config of the tests (tests/training/): a few steps of a 4-frame 16×16 NL network, seconds on a CPU.

    python main.py --config=configs/test.py --workdir=/tmp/nl_test --config.data.data_dir=/tmp/nl_test_data

Data: a small synthetic_long_range/same_different variant (16 train clips of 4×16×16), generated into
``data.data_dir`` on first use. Augmentation is off and the batch is the whole training split, so every step sees
the same set of clips however the data is split over processes: runs on 1 device, 4 devices and 2 processes are
comparable. The argument ``blocks=none`` gives the baseline without non-local blocks (for init_checkpoint tests).
Expected: finishes in ~15 s on a 2-core CPU (mostly compilation); accuracy is not meaningful.
"""

from nonlocal_jax.config_files import load_sibling, parse_arg


# The generated variant (also what the tests' fixture prepares).
SYNTHETIC = dict(num_frames=4, size=16, digit_size=8, num_train=16, num_validation=8, num_test=8)


def get_config(arg=None):
  """The tiny test config; ``arg`` 'blocks=none' removes the non-local block."""
  config = load_sibling(__file__, 'default').get_config()
  blocks = parse_arg(arg, {'blocks': {'none': 'none', 'res3': 'res3'}}, 'configs/test.py').get('blocks', 'res3')
  m = config.model
  m.stage_sizes, m.width, m.num_classes = (1, 1, 1, 1), 4, 2
  m.stem = '8x8'  # Temporal stride 1: every frame reaches the network.
  m.nonlocal_locations = 'res3:0' if blocks == 'res3' else 'none'
  m.dropout_rate = 0.0  # Keeps runs on different device counts comparable.
  m.head_window = None
  d = config.data
  d.name = 'synthetic_long_range/same_different'
  for k, v in SYNTHETIC.items():
    d.synthetic[k] = v
  d.num_frames, d.frame_stride = 4, 1
  d.train_short_side_min = d.train_short_side_max = d.crop_size = 16
  d.test_short_side = d.test_crop_size = 16
  d.test_num_clips, d.test_num_crops = 2, 1
  d.random_flip = False
  d.global_batch_size, d.eval_global_batch_size = 16, 8
  d.prefetch_batches = 1
  d.eval_split = 'test'
  t = config.train
  t.num_steps, t.base_learning_rate, t.base_batch_size = 6, 0.1, 16
  t.schedule, t.step_boundaries = 'step', (4,)
  t.log_every_steps, t.checkpoint_every_steps, t.keep_checkpoints = 2, 2, 5
  return config
