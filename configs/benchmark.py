r"""Training throughput without the input pipeline: a Kinetics network trained on fake clips (``data.name='fake'``).

Random clips and labels are generated on the devices at the config's input shape (data.num_frames × crop_size² × 3,
already split over the mesh; ``nonlocal_jax.data.fake``), so the clips/s of the progress lines are the network's
train step alone, as in flax's ImageNet example. It runs through the real loop (``main.py``); no dataset is read,
the end-of-run test is skipped (the labels are random), and the final checkpoint is written as in any run.

    python main.py --config=configs/benchmark.py --workdir=/tmp/bench                  # NL C2D R50, 32×224²
    python main.py --config=configs/benchmark.py:arch=i3d,frames=32x2 --workdir=/tmp/bench_i3d
    python main.py --config=configs/benchmark.py:frames=8x8,blocks=none --workdir=/tmp/bench_c2d_8 \
        --config.data.global_batch_size=64 --config.model.dtype=bfloat16

The argument takes the keys of configs/kinetics_nl.py (arch, depth, blocks, pairwise, positions, frames), parsed by
it. The batch is 8 clips (the paper's per-GPU batch): on N devices pass ``--config.data.global_batch_size=8N``.
Read the clips/s of the second and later progress lines: the first window includes compilation. Use a fresh
workdir for each measurement (a rerun in the same one resumes and, once finished, trains nothing).
"""

from nonlocal_jax.config_files import load_sibling


def get_config(arg=None):
  """configs/kinetics_nl.py's variant ``arg`` on fake data: 60 steps, a progress line every 10, no precise BN."""
  config = load_sibling(__file__, 'kinetics_nl').get_config(arg)
  config.data.name = 'fake'
  config.data.global_batch_size = config.train.base_batch_size = 8
  t = config.train
  t.num_steps, t.schedule, t.warmup_steps = 60, 'constant', 0
  t.log_every_steps, t.checkpoint_every_steps = 10, 60
  t.precise_bn_batches = 0  # BatchNorm statistics of random clips: time spent measuring nothing.
  return config
