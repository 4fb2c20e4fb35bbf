r"""Attention maps of non-local blocks, drawn over the frames of a clip as in the paper's Figure 3.

    python -m nonlocal_jax.visualize --workdir=/tmp/synthetic_nl --example=3 --output=/tmp/attention.png
    python -m nonlocal_jax.visualize --workdir=/tmp/kinetics_nl --video=clip.mp4 --block=nonlocal_conv4_3 \
        --queries=8,3,3;16,4,2 --top_k=20

For each query position (t, h, w) on the block's feature grid, the figure has one row: the clip's frames (one
column per key frame of the block), the query marked by a star, a heat map of its weights over every key
position and arrows to its ``top_k`` strongest keys (red: positive weight, blue: negative).

Normalisation, per pairwise function: each query's row of weights f(x_i, x_j)/C(x) is divided by its sum of
absolute values, w_ij / Σ_j |w_ij|. For the Gaussian and embedded Gaussian (softmax) rows this changes
nothing: they already are distributions. Dot product and concatenation rows are f/N, whose scale depends on N
and on the features, and dot products can be negative (they subtract g(x_j)); after the division every row is
a signed share of the query's total weight, comparable across queries, blocks and functions. The strongest keys
are those with the largest |share|; heat maps show |share| (sequential colours), arrows carry the sign.

Python API: ``attention_weights(model, variables, clips)`` (the sown (B·groups, N_query, N_key) weights and the
geometry of every block), ``query_weights`` (one query's normalised weights over the key grid),
``strongest_keys`` and ``plot_attention`` (a matplotlib Figure).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import app, flags
# Figure + Agg canvas rather than pyplot: no global backend switch, no figure left open in notebooks.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch
from PIL import Image

from nonlocal_jax import paths
from nonlocal_jax.data import device_input, normalization, sampling, video_io
# Loaded at its first use (it imports TensorFlow): drawing a model's maps from arrays or a video file needs none.
from nonlocal_jax.data.entry import eval_pipeline
from nonlocal_jax.layers import PAIRWISE, NonLocalBlock, PositionSets
from nonlocal_jax.models import build_model
from nonlocal_jax.training import checkpoint


class VisualizeError(ValueError):
  """The workdir, the clip or the chosen block/queries cannot be shown; the message says what to change."""


@dataclasses.dataclass
class BlockAttention:
  """One non-local block's sown weights and where its query and key positions lie.

  Attributes:
    name: the block's module name ('nonlocal_conv4_3').
    pairwise: its pairwise function.
    positions: 'spacetime', 'space' or 'time'.
    temporal_groups: frames per group of a grouped block, else None.
    query_grid: (T, H, W) of the block's input feature map.
    key_grid: (T', H', W') after the key/value subsampling.
    weights: (B·groups, N_query, N_key) float32, f/C as sown by the block (not yet normalised here).
  """
  name: str
  pairwise: str
  positions: str
  temporal_groups: Optional[int]
  query_grid: tuple
  key_grid: tuple
  weights: np.ndarray

  @property
  def position_sets(self) -> PositionSets:
    """Which positions attend to each other (``nonlocal_jax.layers.geometry``)."""
    return PositionSets(self.positions, self.temporal_groups)


def attention_weights(model, variables: dict, clips) -> dict[str, BlockAttention]:
  """{block name: BlockAttention} of every non-local block of ``model`` on ``clips`` (B, T, H, W, 3)."""
  inputs = {}

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, NonLocalBlock) and context.method_name == '__call__':
      inputs[context.module.name] = (context.module, tuple(args[0].shape))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    _, state = model.apply(variables, jax.numpy.asarray(clips), train=False, mutable=['intermediates'])
  sown = state['intermediates']
  out = {}
  for name, (block, shape) in inputs.items():
    if name not in sown or 'attention' not in sown[name]:
      continue  # sow_attention=False.
    grid = shape[1:-1]
    window = tuple(block.subsample) if block.subsample is not None else (1,) * len(grid)
    out[name] = BlockAttention(name=name, pairwise=block.pairwise, positions=block.positions or 'spacetime',
                               temporal_groups=block.temporal_groups, query_grid=tuple(grid),
                               key_grid=tuple(s // w for s, w in zip(grid, window)),
                               weights=np.asarray(sown[name]['attention'][0], np.float32))
  if not out:
    raise VisualizeError('The model has no non-local block that sows its attention: pick a model with '
                         'nonlocal_locations other than "none".')
  return out


def normalize_rows(weights: np.ndarray, pairwise: str) -> np.ndarray:
  """Each row divided by its sum of absolute values (a no-op for the softmax functions, whose rows are already
  distributions); all-zero rows stay zero."""
  weights = np.asarray(weights, np.float64)
  if PAIRWISE[pairwise].softmax:
    return weights
  total = np.abs(weights).sum(axis=-1, keepdims=True)
  return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def _row_of(block: BlockAttention, batch_index: int, query: Sequence[int]) -> tuple[int, int]:
  """(group, query index) of the sown weights that hold ``query`` = (t, h, w) of clip ``batch_index``."""
  big_t, big_h, big_w = block.query_grid
  t, h, w = (int(q) for q in query)
  if not (0 <= t < big_t and 0 <= h < big_h and 0 <= w < big_w):
    raise VisualizeError(f'Query {tuple(query)} is outside the {block.name} feature grid {block.query_grid} '
                         '(T, H, W): choose t < T, h < H, w < W.')
  return block.position_sets.query_row(block.query_grid, batch_index, query)


def query_weights(block: BlockAttention, batch_index: int, query: Sequence[int]) -> np.ndarray:
  """The normalised weights of one query over the whole key grid (T', H', W'); keys it cannot see are 0."""
  group, row = _row_of(block, batch_index, query)
  values = normalize_rows(block.weights[group, row], block.pairwise)
  region = block.position_sets.keys_seen(block.query_grid, block.key_grid, query)
  full = np.zeros(block.key_grid)
  full[region] = values.reshape(full[region].shape)
  return full


def strongest_keys(weights: np.ndarray, k: int) -> np.ndarray:
  """Indices (into the flattened ``weights``) of the ``k`` largest |weights|, strongest first (stable ties)."""
  flat = np.abs(np.asarray(weights)).ravel()
  return np.argsort(-flat, kind='stable')[:k]


def _display(clip: np.ndarray, data_config: Any = None) -> np.ndarray:
  """0-1 RGB frames from a network input (undoing config.data's normalisation when known)."""
  x = np.asarray(clip, np.float64)
  norm = data_config.get('normalization') if data_config is not None else 'official'
  if norm in ('official', 'mean_std'):
    x = normalization.denormalize(x, data_config)
  elif x.max() <= 1.0:
    x = x * 255.0
  return np.clip(x / 255.0, 0.0, 1.0)


def key_frames(t: int, grid_t: int, clip_t: int) -> tuple[int, int]:
  """[start, stop) of the input frames that key time step ``t`` of a ``grid_t``-step map of a ``clip_t``-frame clip
  covers (e.g. 8 frames pooled to 4 steps: step 0 is frames 0-1), at least one frame."""
  start = min(clip_t - 1, t * clip_t // grid_t)
  return start, max(start + 1, min(clip_t, (t + 1) * clip_t // grid_t))


def plot_attention(block: BlockAttention, clip: np.ndarray, queries: Sequence[Sequence[int]], *,
                   batch_index: int = 0, top_k: int = 10, data_config: Any = None, title: str = ''):
  """A Figure: one row per query, one column per key time step, heat maps of |weights| and arrows to the top_k keys.

  ``clip`` is the network input (T, H, W, 3) of clip ``batch_index``. Where the network has pooled time, a column
  shows the mean of the input frames its key step covers (``key_frames``), so no frame of a step is hidden.
  """
  frames = _display(clip, data_config)
  clip_t, clip_h, clip_w = frames.shape[:3]
  qt, qh, qw = block.query_grid
  kt, kh, kw = block.key_grid
  columns = kt
  fig = Figure(figsize=(2.0 * columns + 1.0, 2.1 * len(queries) + 0.6))
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(queries), columns, squeeze=False)

  def key_image(c):  # A key time step pools several input frames: show their mean, not one of them.
    start, stop = key_frames(c, kt, clip_t)
    return frames[start:stop].mean(axis=0), (f'frame {start}' if stop - start == 1 else f'frames {start}-{stop - 1}')

  def centre(i, j, grid_h, grid_w):  # Pixel (x, y) of a feature cell's centre.
    return (j + 0.5) * clip_w / grid_w - 0.5, (i + 0.5) * clip_h / grid_h - 0.5

  for r, query in enumerate(queries):
    weights = query_weights(block, batch_index, query)
    vmax = max(float(np.abs(weights).max()), 1e-12)
    for c in range(columns):
      ax = axes[r, c]
      image, name = key_image(c)
      ax.imshow(image, interpolation='nearest')
      ax.imshow(np.abs(weights[c]), cmap='inferno', alpha=0.55, vmin=0.0, vmax=vmax, interpolation='nearest',
                extent=(-0.5, clip_w - 0.5, clip_h - 0.5, -0.5))
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=8)
    t, h, w = query
    q_col = min(columns - 1, t * kt // qt)
    q_xy = centre(h, w, qh, qw)
    axes[r, q_col].plot(*q_xy, marker='*', color='lime', markersize=12, markeredgecolor='black')
    axes[r, 0].set_ylabel(f'query {tuple(int(v) for v in query)}', fontsize=8)
    for index in strongest_keys(weights, top_k):
      c, i, j = np.unravel_index(index, weights.shape)
      if weights[c, i, j] == 0:
        continue
      strength = abs(weights[c, i, j]) / vmax
      arrow = ConnectionPatch(xyA=q_xy, coordsA=axes[r, q_col].transData, xyB=centre(i, j, kh, kw),
                              coordsB=axes[r, c].transData, arrowstyle='->',
                              color='red' if weights[c, i, j] > 0 else 'deepskyblue',
                              linewidth=0.5 + 1.5 * strength, alpha=0.4 + 0.6 * strength)
      fig.add_artist(arrow)
  normalised = 'softmax weights' if PAIRWISE[block.pairwise].softmax else 'w / Σ|w| per query'
  fig.suptitle(title or f'{block.name} ({block.pairwise}, {block.positions}; {normalised}; top {top_k})',
               fontsize=9)
  fig.tight_layout()
  return fig


# --- the command line: a workdir's model on a clip ---------------------------------------------------------------

def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def load_run(workdir: str, config=None):
  """(config, model, variables) of the latest checkpoint in ``workdir`` (config: its saved config.json)."""
  if config is None:
    path = paths.as_path(workdir) / 'config.json'
    if not path.is_file():
      raise VisualizeError(f'{workdir} has no config.json: give the workdir of a training run.')
    config = ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))
  try:
    loaded = checkpoint.load_variables(workdir)
  except FileNotFoundError as e:
    raise VisualizeError(f'{workdir} holds no checkpoint: train it first (python main.py --workdir=...).') from e
  variables = {'params': loaded['params'], **({'batch_stats': loaded['batch_stats']} if loaded['batch_stats']
                                               else {})}
  return config, build_model(config.model), variables


def clip_from_video(path: str, data_config) -> np.ndarray:
  """The centre clip of a video file (PyAV), scaled and centre-cropped as config.data's 'val' view, normalised."""
  try:
    video = video_io.decode_video(path, short_side=data_config.test_short_side)
  except video_io.VideoDecodeError as e:
    raise VisualizeError(f'Cannot read the video {path} ({e}): give a readable video file.') from e
  indices = sampling.center_clip_indices(len(video.frames), data_config.num_frames, data_config.frame_stride)
  size = data_config.crop_size
  frames = []
  for i in indices:
    frame = np.asarray(Image.open(io.BytesIO(video.frames[i])).convert('RGB'), np.float32)
    top, left = (frame.shape[0] - size) // 2, (frame.shape[1] - size) // 2
    frames.append(frame[top:top + size, left:left + size])
  return normalization.normalize(np.stack(frames), data_config)


def clip_from_dataset(data_config, index: int) -> tuple[np.ndarray, int]:
  """(clip, label) of example ``index`` of config.data's eval split, as the 'val' view (centre clip and crop)."""
  seen = 0
  for batch in eval_pipeline.create_eval_dataset(data_config, mode='val'):
    rows = int(np.sum(batch['mask']))
    if index < seen + rows:
      row = {'clips': batch['clips'][index - seen:index - seen + 1],
             'view_side': batch['view_side'][index - seen:index - seen + 1]}
      clip = device_input.network_input(data_config)(row)[0]  # Resized and normalised, as a step does.
      return np.asarray(clip), int(batch['label'][index - seen])
    seen += rows
  raise VisualizeError(f'Example {index} is past the end of the split {data_config.eval_split!r} ({seen} '
                       'examples): choose a smaller --example.')


def parse_queries(text: str) -> list[tuple[int, int, int]]:
  """'2,1,1;3,0,1' -> [(2, 1, 1), (3, 0, 1)]."""
  try:
    queries = [tuple(int(v) for v in item.split(',')) for item in text.split(';') if item.strip()]
  except ValueError:
    queries = [()]
  if not queries or any(len(q) != 3 for q in queries):
    raise VisualizeError(f'--queries={text!r} must be t,h,w triples separated by ";" (e.g. 1,2,2;3,0,1).')
  return queries


def default_queries(block: BlockAttention) -> list[tuple[int, int, int]]:
  """Two queries: the centre of the first and of the last feature frame."""
  t, h, w = block.query_grid
  return [(0, h // 2, w // 2), (t - 1, h // 2, w // 2)]


def visualize(workdir: str, output: str, *, video: Optional[str] = None, example: Optional[int] = None,
              block: Optional[str] = None, queries: Optional[Sequence[Sequence[int]]] = None, top_k: int = 10,
              config=None):
  """Draws ``workdir``'s model's attention on a clip (a video file or an eval example) into ``output`` (a PNG).

  ``output`` may be local or gs://. Returns (BlockAttention of the chosen block, Figure). The block defaults to
  the last non-local block.
  """
  config, model, variables = load_run(workdir, config)
  if (video is None) == (example is None):
    raise VisualizeError('Give exactly one of --video=FILE and --example=INDEX.')
  if video is not None:
    clip, label = clip_from_video(video, config.data), None
  else:
    clip, label = clip_from_dataset(config.data, example)
  blocks = attention_weights(model, variables, clip[None])
  name = block or sorted(blocks)[-1]
  if name not in blocks:
    raise VisualizeError(f'--block={name} is not a non-local block of this model: choose one of {sorted(blocks)}.')
  chosen = blocks[name]
  queries = list(queries) if queries else default_queries(chosen)
  source = os.path.basename(video) if video else f'example {example} (label {label})'
  fig = plot_attention(chosen, clip, queries, top_k=top_k, data_config=config.data,
                       title=f'{name} ({chosen.pairwise}) on {source}; top {top_k} keys per query')
  image = io.BytesIO()  # matplotlib writes local files only; epath writes the bytes anywhere (gs://).
  fig.savefig(image, format='png', dpi=100)
  output = paths.absolute(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  output.write_bytes(image.getvalue())
  return chosen, fig


def main(argv: Sequence[str]) -> None:
  """The command line: see the module docstring."""
  del argv
  f = flags.FLAGS
  try:
    queries = parse_queries(f.queries) if f.queries else None
    chosen, _ = visualize(f.workdir, f.output or os.path.join(f.workdir, 'attention.png'), video=f.video,
                          example=f.example, block=f.block, queries=queries, top_k=f.top_k)
  except VisualizeError as e:
    sys.exit(f'Error: {e}')
  print(f'{chosen.name}: feature grid {chosen.query_grid}, keys {chosen.key_grid}; figure written to '
        f'{f.output or os.path.join(f.workdir, "attention.png")}')


def _define_flags_and_run() -> None:
  flags.DEFINE_string('workdir', None, 'Workdir of a training run (config.json and checkpoints).')
  flags.DEFINE_string('video', None, 'A video file (decoded with PyAV); its centre clip is shown.')
  flags.DEFINE_integer('example', None, "Index of an example of the run's eval split (instead of --video).")
  flags.DEFINE_string('block', None, 'Non-local block name (nonlocal_conv4_3); default: the last one.')
  flags.DEFINE_string('queries', None, 'Query positions t,h,w on the block\'s feature grid, ";"-separated; '
                      'default: the centre of the first and last frames.')
  flags.DEFINE_integer('top_k', 10, 'Strongest keys drawn as arrows per query.')
  flags.DEFINE_string('output', None, 'PNG path; default: <workdir>/attention.png.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)


if __name__ == '__main__':
  _define_flags_and_run()
