"""Figures of evaluation results: the row-normalised confusion matrix, labelled with the class names."""

from __future__ import annotations

import io
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

# Above this many classes the confusion matrix is saved as CSV only: a figure would not be readable.
MAX_PLOT_CLASSES = 100


def confusion_figure(confusion: np.ndarray, class_labels: Sequence[str], title: str) -> Figure:
  """The confusion matrix (rows true, columns predicted) as fractions of each true class, counts written in.

  ``class_labels`` names the rows and columns (class names, or their indices as text). Classes without examples
  stay blank. Built on a ``Figure`` with its own Agg canvas rather than pyplot: no global backend switch, and no
  figure left open in notebooks.
  """
  n = len(class_labels)
  totals = confusion.sum(axis=1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    rates = confusion / totals  # Classes without examples stay NaN: drawn blank.
  size = max(4.0, 2.5 + 0.18 * n)
  fig = Figure(figsize=(size + 1.0, size))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  image = ax.imshow(rates, cmap='Blues', vmin=0.0, vmax=1.0, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
  font = 8 if n <= 30 else 5
  ax.set_xticks(range(n), class_labels, rotation=90, fontsize=font)
  ax.set_yticks(range(n), class_labels, fontsize=font)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if n <= 20:
    for (i, j), count in np.ndenumerate(confusion):
      if count:
        ax.text(j, i, str(count), ha='center', va='center', fontsize=7,
                color='white' if rates[i, j] > 0.5 else 'black')
  fig.tight_layout()
  return fig


def png_bytes(fig: Figure) -> bytes:
  """``fig`` as a PNG file's bytes (100 dpi)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  return buffer.getvalue()


__all__ = ['MAX_PLOT_CLASSES', 'confusion_figure', 'png_bytes']
