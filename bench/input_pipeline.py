"""Benchmark of the input pipeline against its physical floor and its previous implementation, in one run.

    python bench/input_pipeline.py                 # about 2 minutes on 2 cores
    python bench/input_pipeline.py --quick         # fewer videos and batches, for a smoke run

Clips shaped like Kinetics are made on the spot (10 s at 30 fps, 426×240 H.264, textured moving content whose JPEGs
are about as large as real frames') and prepared with the Kinetics preparation (frames stored as JPEG at 256 on
the shorter side). On them, side by side:

- the **decode floor**: only the JPEG decoding of exactly the frames each training clip needs, whole frames, one
  thread, nothing else (no reading, no resizing, no batching);
- the **training stream** at the paper's recipe (32×2 clips, scale jitter [256, 320], 224 crops, flip, batch 4):
  the current pipeline (``nonlocal_jax.data``) and the previous one (``bench/legacy_input.py``: tf.data, whole
  frames decoded and scaled, then cropped);
- the **test views** (10 clips × 3 crops of 256), current and previous, against their decode floor (each frame
  that a video's test clips need, decoded once and whole, one thread);
- the **consumer's thread**: its CPU time per example while batches are taken, which one thread does whatever
  the number of workers, so 1000 / (its milliseconds) is the most examples per second the pipeline can give;
- **resuming** at batch 0 and at a far batch: time to the first batch and examples read;
- the current pipeline's **peak resident memory** at the Kinetics defaults (batch 64, prefetch 2, one thread per
  core), in a fresh process.

Speed per core is measured in a fresh process confined to one core with one worker thread (every thread any
pipeline starts shares that core), and again with all cores. Writes bench/results/input_pipeline.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
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

GPU_RATES = (150.0, 500.0)  # Training clips/s of one GPU to size the host for (an older and a current GPU, bf16).


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


def rate(make_iterator, batches: int, batch_size: int, warmup: int = 2) -> tuple[float, float]:
  """(examples per second (wall), the consumer thread's CPU milliseconds per example) of an iterator of batches,
  after ``warmup`` batches. The consumer's share is what no number of worker threads can spread: one thread runs
  it, so 1000 / ms is the most examples per second the pipeline can give on any number of cores."""
  iterator = iter(make_iterator())
  for _ in range(warmup):
    next(iterator)
  wall, consumer = time.perf_counter(), time.thread_time()
  for _ in range(batches):
    next(iterator)
  wall, consumer = time.perf_counter() - wall, time.thread_time() - consumer
  close = getattr(iterator, 'close', None)
  if close:
    close()
  return batches * batch_size / wall, 1e3 * consumer / (batches * batch_size)


def decode_floor(c, clips: int) -> float:
  """Clips per second of decoding exactly the frames of ``clips`` training clips, whole frames, one thread."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import builders, records, sampling  # pylint: disable=g-import-not-at-top
  builder = builders.prepared_builder(c, [c.train_split])
  source = records.open_split(builder, c.train_split)
  rng = np.random.default_rng(0)
  jobs = []
  for i in range(clips):
    frames = source.example(i % len(source)).features.feature['video'].bytes_list.value
    jobs.append([frames[j] for j in sampling.train_clip_indices(len(frames), c.num_frames, c.frame_stride, rng)])
  tf.io.decode_jpeg(jobs[0][0], channels=3)  # Warm-up.
  wall = time.perf_counter()
  for frames in jobs:
    for frame in frames:
      tf.io.decode_jpeg(frame, channels=3)
  return clips / (time.perf_counter() - wall)


def views_decode_floor(c, videos: int) -> float:
  """Test views per second of decoding, once each and whole, the frames a video's test clips need (the ~150 of
  300 that 10 clips of 32×2 share), one thread; a video gives clips × crops views."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from nonlocal_jax.data import builders, records, sampling  # pylint: disable=g-import-not-at-top
  builder = builders.prepared_builder(c, [c.train_split])
  source = records.open_split(builder, c.train_split)
  jobs = []
  for i in range(videos):
    frames = source.example(i % len(source)).features.feature['video'].bytes_list.value
    clips = sampling.test_clip_indices(len(frames), c.num_frames, c.frame_stride, c.test_num_clips)
    jobs.append([frames[j] for j in np.unique(clips)])
  tf.io.decode_jpeg(jobs[0][0], channels=3)  # Warm-up.
  wall = time.perf_counter()
  for frames in jobs:
    for frame in frames:
      tf.io.decode_jpeg(frame, channels=3)
  return videos * c.test_num_clips * c.test_num_crops / (time.perf_counter() - wall)


def streams(c, batches: int, legacy: bool = True) -> dict:
  """Training clips/s and test views/s of the current pipeline (and the previous one) on ``config.data`` ``c``."""
  # pylint: disable=g-import-not-at-top
  from bench import legacy_input
  from nonlocal_jax import data
  from nonlocal_jax.data import layout as layout_lib
  one = layout_lib.ProcessLayout(0, 1, 1)
  batch, views = c.global_batch_size, c.eval_global_batch_size
  test = c.copy_and_resolve_references()
  test.eval_split = test.train_split  # More videos than the validation split: 3 in 4 of them.

  def endless(make):
    def run():
      while True:
        yield from make()
    return run

  # Test batches come five to a video (30 views, 6 a batch) and the pipelines decode whole videos ahead of the
  # consumer (up to prefetch + workers videos), so a window of a few batches after a short warm-up times views
  # decoded before it started: warm up over 2 videos and time 10, for both pipelines alike. A pass that ends inside
  # the window drains the workers and starts again, which a real test pass (thousands of videos) never does: the
  # default --videos (24, 18 of them in the split read) keeps the window inside one pass.
  per_video = math.ceil(test.test_num_clips * test.test_num_crops / views)
  test_rate = lambda make: rate(endless(make), 10 * per_video, views, warmup=2 * per_video)
  runs = {'train_new': lambda: rate(lambda: data.create_train_iterator(c, seed=0, layout=one), batches, batch),
          'test_new': lambda: test_rate(lambda: data.create_eval_dataset(test, layout=one))}
  if legacy:
    runs['train_legacy'] = lambda: rate(lambda: legacy_input.train_iterator(c, seed=0, layout=one), batches, batch)
    runs['test_legacy'] = lambda: test_rate(lambda: legacy_input.test_views(test, layout=one))
  out = {}
  for name, run in runs.items():
    out[name], out[name + '_consumer_ms'] = run()
  return out


def one_core(data_dir: str, batches: int) -> dict:
  """The floor and both pipelines with this process confined to one core (one worker thread): per-core rates.

  Runs in a fresh process (``--one_core``), confined before TensorFlow starts a thread, so that every thread any
  pipeline starts shares the one core.
  """
  code = [sys.executable, os.path.abspath(__file__), f'--one_core={data_dir}', f'--batches={batches}']
  out = subprocess.run(code, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _one_core_child(data_dir: str, batches: int) -> None:
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  c = paper_config(data_dir)
  c.num_workers = 1
  result = {'floor': decode_floor(c, batches * c.global_batch_size), 'test_floor': views_decode_floor(c, 10),
            **streams(c, batches)}
  print(json.dumps(result))


def paper_config(data_dir: str):
  """``config.data`` at the paper's defaults on the prepared Kinetics-style set, batch 4 (as the issue measured)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.data_config()
  c.name, c.data_dir = 'kinetics400', data_dir
  c.global_batch_size, c.eval_global_batch_size = 4, 6
  return c


def resume_cost(make, start_batches) -> list:
  """(start batch, seconds to the first batch, records read) for iterators started at each of ``start_batches``."""
  from nonlocal_jax.data import records  # pylint: disable=g-import-not-at-top
  rows = []
  for start in start_batches:
    counted = {'n': 0}
    originals = {name: getattr(records.Source, name) for name in ('read', 'example_and_values')}

    def counting(original):
      def wrapper(self, *args):
        counted['n'] += 1
        return original(self, *args)
      return wrapper
    for name, original in originals.items():
      setattr(records.Source, name, counting(original))
    try:
      begin = time.perf_counter()
      iterator = make(start)
      next(iterator)
      rows.append((start, time.perf_counter() - begin, counted['n']))
      iterator.close()
    finally:
      for name, original in originals.items():
        setattr(records.Source, name, original)
  return rows


def peak_memory(data_dir: str, batches: int, mode: str = 'train') -> dict:
  """Resident memory (MiB) of a fresh process once its libraries are loaded, and its peak while it reads
  ``batches`` batches at the Kinetics defaults (the peak is reset after the imports: Linux's clear_refs): training
  batches, or with ``mode='test'`` batches of test views (of the split the benchmark times them on)."""
  code = f"""
import itertools, os, sys, json
sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
from configs import default
from nonlocal_jax.data import eval_pipeline, train_pipeline, layout
import tensorflow as tf
c = default.data_config()
c.name, c.data_dir = 'kinetics400', {data_dir!r}
c.eval_split = c.train_split
def status(key):
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f if line.startswith(key + ':')) / 1024
with open('/proc/self/clear_refs', 'w') as f:
  f.write('5')  # Resets the peak (VmHWM) to the current resident size.
before = status('VmRSS')
one = layout.ProcessLayout(0, 1, 1)
if {mode!r} == 'test':
  it, batch = iter(eval_pipeline.create_eval_dataset(c, layout=one)), c.eval_global_batch_size
else:
  it, batch = train_pipeline.create_train_iterator(c, seed=0, layout=one), c.global_batch_size
read = sum(1 for _ in itertools.islice(it, {batches}))
after = status('VmHWM')
print(json.dumps({{'before_mib': before, 'peak_mib': after, 'batch': batch, 'batches_read': read, 'mode': {mode!r},
                  'prefetch_batches': c.prefetch_batches, 'threads': c.num_workers or len(os.sched_getaffinity(0))}}))
"""
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
  """Runs the benchmark and writes the results."""
  # pylint: disable=g-import-not-at-top
  from bench import common
  from bench import legacy_input
  from nonlocal_jax import data
  from nonlocal_jax.data import layout as layout_lib
  from nonlocal_jax.data import prepare
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='fewer videos and batches')
  parser.add_argument('--videos', type=int, default=24, help='Kinetics-like videos to make (3 in 4 are read)')
  parser.add_argument('--out_dir', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
  parser.add_argument('--one_core', default=None, help=argparse.SUPPRESS)  # The confined child's data_dir.
  parser.add_argument('--batches', type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.one_core:
    _one_core_child(args.one_core, args.batches)
    return
  batches = 3 if args.quick else 10
  n_videos = 4 if args.quick else args.videos
  machine = common.machine_description()
  cores = int(machine['cpu_cores_available'])
  one = layout_lib.ProcessLayout(0, 1, 1)
  load_before = os.getloadavg()
  results = {'machine': machine}
  with tempfile.TemporaryDirectory() as tmp:
    videos, annotations = write_kinetics_like(os.path.join(tmp, 'like'), n_videos)
    data_dir = os.path.join(tmp, 'tfds')
    summary = prepare.prepare_kinetics('400', videos, annotations, data_dir, num_workers=cores)
    results['prepare_s_per_video'] = summary.seconds / n_videos
    c = paper_config(data_dir)
    batch = c.global_batch_size
    print('one core: the floor and both pipelines ...', flush=True)
    results['per_core'] = one_core(data_dir, batches)
    print(f'all {cores} cores: both pipelines ...', flush=True)
    results['all_cores'] = {'floor': decode_floor(c, batches * batch) * cores,
                            'test_floor': views_decode_floor(c, 10) * cores, **streams(c, batches)}
    print('resuming ...', flush=True)
    results['resume_new'] = resume_cost(
        lambda s: data.create_train_iterator(c, seed=0, layout=one, start_batch=s), [0, 10**6])
    legacy_far = 25 if args.quick else 100
    results['resume_legacy'] = [(s, t) for s, t, _ in resume_cost(
        lambda s: legacy_input.train_iterator(c, seed=0, layout=one, start_batch=s), [0, legacy_far])]
    print('peak memory ...', flush=True)
    results['memory'] = peak_memory(data_dir, 3 if args.quick else 6)
    results['memory_test'] = peak_memory(data_dir, 3 if args.quick else 6, mode='test')
  results['load_average'] = {'before': load_before, 'after': os.getloadavg()}
  write(results, args.out_dir, batches, n_videos, cores)


def write(results: dict, out_dir: str, batches: int, n_videos: int, cores: int) -> None:
  """Prints the figures and writes them as JSON and a markdown table."""
  from bench import common  # pylint: disable=g-import-not-at-top
  r = results
  one, every = r['per_core'], r['all_cores']
  ratios = {
      'train_vs_legacy': one['train_new'] / one['train_legacy'],
      'train_vs_floor': one['train_new'] / one['floor'],
      'legacy_vs_floor': one['train_legacy'] / one['floor'],
      'test_vs_legacy': one['test_new'] / one['test_legacy'],
      'test_vs_floor': one['test_new'] / one['test_floor'],
      'test_legacy_vs_floor': one['test_legacy'] / one['test_floor'],
  }
  r['ratios'] = ratios
  r['cores_per_gpu'] = {f'{rate:.0f}': rate / one['train_new'] for rate in GPU_RATES}
  r['settings'] = {'batches': batches, 'videos': n_videos}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'input_pipeline.json'), 'w') as f:
    json.dump(r, f, indent=2)
  header = ['measure', 'per core (1 core, 1 thread)', f'all {cores} cores', 'vs floor', 'vs previous']
  rows = [
      ['decode floor: the 32 frames a clip needs, whole, JPEG only', f"{one['floor']:.1f}",
       f"({every['floor']:.1f})", '1.00', ''],
      ['training clips/s, current', f"{one['train_new']:.1f}", f"{every['train_new']:.1f}",
       f"{ratios['train_vs_floor']:.2f}", f"**{ratios['train_vs_legacy']:.2f}×**"],
      ['training clips/s, previous (tf.data)', f"{one['train_legacy']:.1f}", f"{every['train_legacy']:.1f}",
       f"{ratios['legacy_vs_floor']:.2f}", '1.00×'],
      ['decode floor for test views: the frames a video\'s 10 clips need, once each, whole, JPEG only',
       f"{one['test_floor']:.1f}", f"({every['test_floor']:.1f})", '1.00', ''],
      ['test views/s (10×3 of 256), current', f"{one['test_new']:.1f}", f"{every['test_new']:.1f}",
       f"{ratios['test_vs_floor']:.2f}", f"**{ratios['test_vs_legacy']:.2f}×**"],
      ['test views/s, previous (tf.data)', f"{one['test_legacy']:.1f}", f"{every['test_legacy']:.1f}",
       f"{ratios['test_legacy_vs_floor']:.2f}", '1.00×'],
  ]
  resume = '; '.join(f'batch {s:,}: {t:.2f} s, {n} examples read' for s, t, n in r['resume_new'])
  legacy_resume = '; '.join(f'batch {s}: {t:.2f} s' for s, t in r['resume_legacy'])
  m, t = r['memory'], r['memory_test']
  load = r['load_average']
  markdown = '\n'.join([
      '# Input pipeline', '', f'Machine: {common.machine_line(r["machine"])}; load average '
      f'{load["before"][0]:.1f} before, {load["after"][0]:.1f} after.', '',
      f'{n_videos} Kinetics-like videos (10 s, 30 fps, 426×240 H.264, stored as JPEG at 256 on the shorter side); '
      f'32×2 training clips, scale [256, 320], 224 crops, flip, batch 4; test: 10 clips × 3 crops of 256. '
      f'Training: {batches} batches after 2 of warm-up; test: 50 batches (10 videos) after 10 (2 videos). '
      'Per core: a fresh process confined to one core, one worker thread '
      f'(the floors: one thread decoding; the all-cores floors are them × {cores}).', '',
      common.markdown_table(header, rows), '',
      "The consumer's thread (all cores), CPU per example while batches are taken, and the most examples per "
      'second that one thread allows, however many cores: ' + '; '.join(
          f"{label} {every[key + '_consumer_ms']:.3f} ms ({1e3 / every[key + '_consumer_ms']:,.0f}/s)"
          for key, label in (('train_new', 'training clips, current'), ('train_legacy', 'previous'),
                             ('test_new', 'test views, current'), ('test_legacy', 'previous'))) + '.', '',
      f'Resuming (current): {resume}. Previous pipeline: {legacy_resume} (it re-reads every example before the '
      'start).', '',
      f'Peak resident memory of a fresh process reading {m["batch"]}-clip batches at the Kinetics defaults '
      f'(prefetch {m["prefetch_batches"]}, one thread per core): {m["peak_mib"]:.0f} MiB, of which '
      f'{m["before_mib"]:.0f} MiB were resident before the pipeline started (TensorFlow, JAX): the pipeline '
      f'adds **{m["peak_mib"] - m["before_mib"]:.0f} MiB**. Reading {t["batches_read"]} batches of {t["batch"]} test '
      f'views instead ({t["threads"]} threads): {t["peak_mib"]:.0f} MiB, of which {t["before_mib"]:.0f} MiB before: the pipeline '
      f'adds **{t["peak_mib"] - t["before_mib"]:.0f} MiB** (each thread\'s video holds its decoded frames and its '
      'views until their batches go out).', '',
      'Cores to keep one GPU fed at this per-core rate: ' + ', '.join(
          f'{rate} clips/s → **{n:.0f} cores**' for rate, n in r['cores_per_gpu'].items()) + '.', ''])
  with open(os.path.join(out_dir, 'input_pipeline.md'), 'w') as f:
    f.write(markdown)
  print(markdown)


if __name__ == '__main__':
  main()
