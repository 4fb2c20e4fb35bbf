"""The confusion figure: labelled with the class names (or indices), counts written in, empty classes blank."""

import numpy as np

from nonlocal_jax.evaluation import plots


def _tick_labels(axis):
  return [t.get_text() for t in axis.get_ticklabels()]


def test_confusion_figure_names_the_classes_and_writes_the_counts():
  confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
  fig = plots.confusion_figure(confusion, ['different', 'same', 'other'], 'a title')
  ax = fig.axes[0]
  assert _tick_labels(ax.xaxis) == _tick_labels(ax.yaxis) == ['different', 'same', 'other']
  assert ax.get_title() == 'a title'
  assert sorted(t.get_text() for t in ax.texts) == ['1', '2', '3']
  rates = ax.images[0].get_array()
  np.testing.assert_allclose(rates[0], [.75, .25, 0.])
  assert np.ma.getmaskarray(rates)[2].all() and not np.ma.getmaskarray(rates)[:2].any()  # No examples: blank.
  assert plots.png_bytes(fig)[:8] == b'\x89PNG\r\n\x1a\n'


def test_confusion_figure_falls_back_to_what_the_caller_passes():
  fig = plots.confusion_figure(np.eye(2, dtype=int), ['0', '1'], 'indices')
  assert _tick_labels(fig.axes[0].xaxis) == ['0', '1']
