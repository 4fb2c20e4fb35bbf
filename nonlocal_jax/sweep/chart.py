"""A sweep's results as a bar chart: top-1 and top-5 (or mAP) per variant, with the spread over seeds."""

from __future__ import annotations

import io
from typing import Sequence

# Figure + Agg canvas rather than pyplot: no global backend switch, no figure left open in notebooks.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from nonlocal_jax import paths
from nonlocal_jax.sweep import statistics


def plot(rows: Sequence[dict], path: paths.PathLike, title: str = '') -> None:
  """Top-1 and top-5 bars per variant (a multi-label sweep: mAP; unfinished variants left empty), saved as a PNG
  (local or gs://).

  With several seeds the bars are means, the score (top-1 or mAP) carries a ± one standard deviation error bar and
  a dot per seed.
  """
  variants = statistics.summarize(rows)
  n = len(variants)
  fig = Figure(figsize=(max(5.0, 1.2 * n + 2.0), 4.0))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x = np.arange(n)
  bars_of = [(-0.2, 'score', 'top-1'), (0.2, 'top5', 'top-5')]
  if all(v['top5'] is None for v in variants) or variants[0]['metric'] == 'map':  # Top-5 only for > 5 classes.
    bars_of = [(0.0, 'score', {'top1': 'top-1', 'map': 'mAP'}[variants[0]['metric']])]
  width = 0.8 / len(bars_of)
  for offset, key, name in bars_of:
    values = [100 * v[key] if v[key] is not None else 0.0 for v in variants]
    bars = ax.bar(x + offset, values, width=width, label=name)
    for bar, v in zip(bars, variants):
      if v[key] is not None:
        # Above the error bar and the seeds' dots, so that the figure stays readable.
        top = max([bar.get_height()] + ([100 * (v['score'] + (v['score_std'] or 0.0))]
                                        + [100 * t for t in v['score_runs'] if t is not None] if key == 'score' else []))
        ax.annotate(f'{100 * v[key]:.1f}', (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 2),
                    textcoords='offset points', ha='center', va='bottom', fontsize=7)
  for i, v in enumerate(variants):
    if v['score_std'] is not None:
      ax.errorbar(i + bars_of[0][0], 100 * v['score'], yerr=100 * v['score_std'], color='black', capsize=3,
                  linewidth=1)
    runs = [100 * t for t in v['score_runs'] if t is not None]
    if len(v['seeds']) > 1 and runs:
      ax.plot([i + bars_of[0][0]] * len(runs), runs, linestyle='none', marker='o', markersize=3, color='black')
  ax.set_xticks(x, [v['label'] for v in variants], rotation=20, ha='right', fontsize=8)
  ax.set_ylabel(('test mAP (%)' if variants[0]['metric'] == 'map' else 'test accuracy (%)') + (' (mean over seeds)' if any(len(v['seeds']) > 1 for v in variants) else ''))
  ax.set_ylim(0, 110)
  ax.legend(loc='lower right')
  ax.set_title(title)
  fig.tight_layout()
  image = io.BytesIO()  # matplotlib writes local files only; epath writes the bytes anywhere.
  fig.savefig(image, format='png', dpi=100)
  paths.as_path(path).write_bytes(image.getvalue())
