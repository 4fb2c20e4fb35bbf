"""Benchmark of the data side: preparation seconds per video, and clips per second (and per core) of the pipeline.

    python bench/input_pipeline.py                 # about 3 minutes on 2 cores
    python bench/input_pipeline.py --quick         # fewer batches, for a smoke run

Three datasets, all made on the spot in a temporary folder (nothing is downloaded):

- ``tiny``: the test suite's Kinetics-style folder (5 clips of 64×48, about 1 s, plus a corrupt and a missing
  file), prepared with ``prepare_kinetics``; stored frames are 256 on the shorter side like real Kinetics, but
  flat-coloured and short, so decoding is cheaper than on real clips;
- ``kinetics_like``: clips shaped like Kinetics (10 s at 30 fps, 426×240 H.264, textured moving content whose
  JPEGs are about as large as real frames'), to estimate real preparation and pipeline costs;
- ``synthetic``: ``synthetic_long_range/same_different`` (8 frames of 32×32).

For each it measures, after a warm-up, training clips/s with the paper's recipe (32×2 clips, scale [256, 320],
224 crops, flip; the synthetic set uses its own 8×32×32 settings), test views/s (10 clips × 3 crops of 256) and
validation clips/s (centre clip), each also divided by the machine's cores (tf.data uses all of them).
Writes bench/results/input_pipeline.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import av  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# TensorFlow and JAX are imported inside the functions: the decoding workers of the Kinetics preparation are
# spawned and re-import this entry-point module, and should start in a fraction of a second, not in ten.

# An estimate, not a measurement (no GPU here): R50 NL C2D 32×2 training throughput of one H100-class GPU in
# bf16. The official schedule (400k steps × 64 clips in about 3 days on 8 older GPUs) is about 12 clips/s per
# GPU; current GPUs and mixed precision are roughly ten times faster.
ASSUMED_GPU_TRAIN_CLIPS_PER_S = 150.0
ASSUMED_GPU_TEST_VIEWS_PER_S = 3 * ASSUMED_GPU_TRAIN_CLIPS_PER_S  # Forward only, at 256² instead of 224².


def write_kinetics_like(root: str, num_videos: int, seconds: float = 10.0, fps: int = 30,
                        size: tuple[int, int] = (240, 426)) -> tuple[str, str]:
  """Writes ``num_videos`` Kinetics-shaped H.264 clips with textured, moving content, and their CSV."""
  videos = os.path.join(root, 'videos')
  annotations = os.path.join(root, 'annotations')
  os.makedirs(videos, exist_ok=True)
  os.makedirs(annotations, exist_ok=True)
  rng = np.random.default_rng(0)
  h, w = size
  rows = []
  for v in range(num_videos):
    # Smooth random texture (blurred noise, upsampled) panning over time, plus grain: JPEGs of real-frame size.
    base = rng.uniform(0, 255, size=(h // 8 + 2, w // 8 + 2 + int(seconds * fps), 3))
    texture = np.kron(base, np.ones((8, 8, 1)))
    youtube_id = f'kin{v:08d}'
    path = os.path.join(videos, f'{youtube_id}_000000_000010.mp4')
    with av.open(path, 'w') as container:
      stream = container.add_stream('libx264', rate=fps)
      stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
      for t in range(int(seconds * fps)):
        frame = texture[:h, t * 2 % 64:t * 2 % 64 + w]
        frame = np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)
    rows.append(f'class{v % 3},{youtube_id},0,10,{"train" if v % 4 else "val"},0')
  with open(os.path.join(annotations, 'all.csv'), 'w') as f:
    f.write('label,youtube_id,time_start,time_end,split,is_cc\n' + '\n'.join(rows) + '\n')
  return videos, annotations


def throughput(make_iterator, batches: int, batch_size: int, warmup: int = 2) -> float:
  """Examples per second of an iterator of batches, after ``warmup`` batches (graph building, buffers)."""
  iterator = iter(make_iterator())
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def paper_config(data_dir: str):
  """``config.data`` at the paper's defaults, on the prepared Kinetics-style set."""
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.data_config()
  c.name, c.data_dir = 'kinetics400', data_dir
  c.global_batch_size, c.eval_global_batch_size, c.shuffle_buffer = 8, 30, 16
  return c


def synthetic_config(data_dir: str):
  """``config.data`` for the synthetic benchmark (8×32×32 clips, no rescaling, no flip)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.data_config()
  c.name, c.data_dir = 'synthetic_long_range/same_different', data_dir
  c.num_frames, c.frame_stride = 8, 1
  c.train_short_side_min = c.train_short_side_max = c.crop_size = c.test_short_side = c.test_crop_size = 32
  c.test_num_clips, c.test_num_crops, c.random_flip = 1, 1, False
  c.global_batch_size, c.eval_global_batch_size, c.shuffle_buffer = 64, 64, 512
  return c


def measure_pipeline(c, batches: int, layout) -> dict:
  """Training clips/s, test views/s and validation clips/s of ``config.data`` ``c``."""
  from nonlocal_jax import data  # pylint: disable=g-import-not-at-top
  def endless_eval(mode):
    def make():
      while True:
        yield from data.create_eval_dataset(c, mode=mode, layout=layout)
    return make

  return {
      'train_clips_per_s': throughput(lambda: data.create_train_iterator(c, seed=0, layout=layout), batches,
                                      c.global_batch_size),
      'test_views_per_s': throughput(endless_eval('test'), batches, c.eval_global_batch_size),
      'val_clips_per_s': throughput(endless_eval('val'), batches, c.eval_global_batch_size),
  }


def main(argv=None) -> None:
  """Runs the benchmark and writes the results."""
  # pylint: disable=g-import-not-at-top
  from bench import common
  from nonlocal_jax.data import layout as layout_lib
  from nonlocal_jax.data import prepare
  from tests.data import fixtures
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='fewer videos and batches')
  parser.add_argument('--kinetics_like_videos', type=int, default=8)
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  args = parser.parse_args(argv)
  batches = 3 if args.quick else 8
  n_like = 4 if args.quick else args.kinetics_like_videos
  machine = common.machine_description()
  cores = int(machine['cpu_cores_available'])
  layout = layout_lib.ProcessLayout(0, 1, 1)
  results = {'machine': machine, 'assumptions': {'gpu_train_clips_per_s': ASSUMED_GPU_TRAIN_CLIPS_PER_S,
                                                  'gpu_test_views_per_s': ASSUMED_GPU_TEST_VIEWS_PER_S},
             'datasets': {}}
  with tempfile.TemporaryDirectory() as tmp:
    sets = {}
    videos, annotations = fixtures.make_kinetics_folder(os.path.join(tmp, 'tiny'))
    sets['tiny'] = (videos, annotations, len(fixtures.GOOD_VIDEOS) + 1)  # +1: the corrupt file is opened too.
    videos, annotations = write_kinetics_like(os.path.join(tmp, 'like'), n_like)
    sets['kinetics_like'] = (videos, annotations, n_like)
    for name, (videos, annotations, decoded) in sets.items():
      data_dir = os.path.join(tmp, name, 'tfds')
      summary = prepare.prepare_kinetics('400', videos, annotations, data_dir, num_workers=cores)
      row = {'videos_decoded': decoded, 'prepare_s': summary.seconds,
             'prepare_s_per_video': summary.seconds / decoded,
             'prepare_core_s_per_video': summary.seconds * cores / decoded}
      row.update(measure_pipeline(paper_config(data_dir), batches, layout))
      results['datasets'][name] = row
    data_dir = os.path.join(tmp, 'synthetic')
    start = time.perf_counter()
    builder = prepare.prepare_synthetic('synthetic_long_range/same_different', data_dir, num_train=2000,
                                        num_validation=200, num_test=200)
    seconds = time.perf_counter() - start
    row = {'videos_decoded': 2400, 'prepare_s': seconds, 'prepare_s_per_video': seconds / 2400,
           'prepare_core_s_per_video': seconds / 2400}  # Generation runs in one process.
    c = synthetic_config(data_dir)
    for k, v in builder.builder_config.__dict__.items():
      if k in c.synthetic:
        setattr(c.synthetic, k, v)
    row.update(measure_pipeline(c, batches * 4, layout))
    results['datasets']['synthetic'] = row

  for row in results['datasets'].values():
    for key in ('train_clips_per_s', 'test_views_per_s', 'val_clips_per_s'):
      row[key.replace('_per_s', '_per_s_per_core')] = row[key] / cores
  like = results['datasets']['kinetics_like']
  results['cores_per_gpu_estimate'] = {
      'train': ASSUMED_GPU_TRAIN_CLIPS_PER_S / like['train_clips_per_s_per_core'],
      'test': ASSUMED_GPU_TEST_VIEWS_PER_S / like['test_views_per_s_per_core'],
  }
  header = ['dataset', 'prepare s/video (wall)', 'prepare core·s/video', 'train clips/s', 'train clips/s/core',
            'test views/s', 'test views/s/core', 'val clips/s', 'val clips/s/core']
  table = [[name, f"{r['prepare_s_per_video']:.3f}", f"{r['prepare_core_s_per_video']:.3f}",
            f"{r['train_clips_per_s']:.1f}", f"{r['train_clips_per_s_per_core']:.1f}",
            f"{r['test_views_per_s']:.1f}", f"{r['test_views_per_s_per_core']:.1f}",
            f"{r['val_clips_per_s']:.1f}", f"{r['val_clips_per_s_per_core']:.1f}"]
           for name, r in results['datasets'].items()]
  est = results['cores_per_gpu_estimate']
  markdown = '\n'.join([
      '# Input pipeline', '', f'Machine: {common.machine_line(machine)}.', '',
      'Kinetics sets: 32×2 clips, scale [256, 320], 224 crops (train); 10 clips × 3 crops of 256 (test); centre '
      'clip and 224 crop (val). Synthetic: 8×32×32 clips, 1 view. Per core = divided by the '
      f'{cores} cores that tf.data and the decoding pool use.', '',
      common.markdown_table(header, table), '',
      f'Cores to keep one GPU fed (estimate): an assumed {ASSUMED_GPU_TRAIN_CLIPS_PER_S:.0f} training clips/s per '
      f'GPU (R50 NL C2D 32×2, bf16; not measured here) ÷ {like["train_clips_per_s_per_core"]:.1f} clips/s per core '
      f'on Kinetics-like clips ≈ **{est["train"]:.0f} cores** for training; '
      f'{ASSUMED_GPU_TEST_VIEWS_PER_S:.0f} test views/s ÷ {like["test_views_per_s_per_core"]:.1f} ≈ '
      f'**{est["test"]:.0f} cores** for multi-view testing.',
  ])
  common.write_results('input_pipeline', results, markdown, args.out_dir)


if __name__ == '__main__':
  main()
