"""``EvalResult``, the outcome of an evaluation, and its files: ``save_results`` writes them, ``load_results`` reads.

Files, all named ``{prefix}_*`` in one directory (local or gs://):

- ``_metrics.json``: ``EvalResult.metrics`` (keys sorted); ``clip_top5``/``video_top5`` only with more than 5
  classes, where top-5 can be anything but 100 %;
- ``_video_scores.npz``: ``video_ids``, ``scores``, ``labels``, ``num_views``, ``view_pooling`` (see
  ``EvalResult``);
- ``_per_class_accuracy.csv``: ``class_index, class_name, num_videos, accuracy`` (``class_name`` empty when the
  caller gave no names; ``accuracy`` ``nan`` for a class without videos);
- ``_confusion.csv``: rows the true class, columns the predicted class, headed by the class names (or indices);
- ``_confusion.png``: the same, row-normalised (only up to ``plots.MAX_PLOT_CLASSES`` classes).

A multi-label result has, instead of the last three, ``_per_class_ap.csv``: ``class_index, class_name,
num_positive_videos, average_precision`` (``nan`` for a class without a positive video, left out of the mAP).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any, Iterable, Optional, Sequence

from etils import epath
import numpy as np

from nonlocal_jax import paths
from nonlocal_jax.evaluation import plots

# No suffix ends another one, so files of distinct prefixes can never share a name.
_SUFFIXES = {
    'metrics': '_metrics.json',
    'video_scores': '_video_scores.npz',
    'per_class_accuracy': '_per_class_accuracy.csv',
    'confusion': '_confusion.csv',
    'confusion_plot': '_confusion.png',
    'per_class_ap': '_per_class_ap.csv',
}
# The files of each kind of result.
_SINGLE_LABEL_FILES = ('metrics', 'video_scores', 'per_class_accuracy', 'confusion', 'confusion_plot')
_MULTI_LABEL_FILES = ('metrics', 'video_scores', 'per_class_ap')


@dataclasses.dataclass
class EvalResult:
  """The outcome of an evaluation over one or more views per video, identical on every process.

  Attributes:
    metrics: clip_top1 (per view), video_top1 (the video's views pooled), mean_class_accuracy (video level,
      over the classes that have videos), num_videos, num_views; with more than 5 classes also clip_top5 and
      video_top5 (with 5 or fewer they are always 100 % and left out). Python floats and ints.
      Multi-label: video_map (mean average precision over the classes with a positive video, see
      ``average_precision``), map_classes and map_videos (the classes and videos it counts), clip_hit1 and
      video_hit1 (hit@1, ``metrics.top_k_hit``; hit5 too with more than 5 classes), num_videos, num_views.
    per_class_accuracy: (num_classes,) video-level top-1 accuracy of each class; NaN for a class without videos.
      None for a multi-label result.
    confusion: (num_classes, num_classes) int64 video counts, rows the true class, columns the predicted class.
      None for a multi-label result.
    video_ids: (num_videos,) sorted int64 ids.
    video_scores: (num_videos, num_classes) float64 class probabilities of each video, its views pooled
      (``view_pooling``).
    video_labels: (num_videos,) int64 true classes; multi-label: (num_videos, num_classes) int64 multi-hot.
    video_num_views: (num_videos,) int64 views pooled for each video.
    class_names: names of the classes, if the caller gave them.
    per_class_ap: multi-label only: (num_classes,) average precision of each class, NaN without a positive.
    view_pooling: 'mean' or 'max': how each video's views were pooled.
  """
  metrics: dict[str, Any]
  per_class_accuracy: np.ndarray
  confusion: np.ndarray
  video_ids: np.ndarray
  video_scores: np.ndarray
  video_labels: np.ndarray
  video_num_views: np.ndarray
  class_names: Optional[tuple[str, ...]] = None
  per_class_ap: Optional[np.ndarray] = None
  view_pooling: str = 'mean'

  @property
  def multi_label(self) -> bool:
    """Whether this is the result of a multi-label evaluation (mAP, not top-k)."""
    return self.per_class_ap is not None

  def class_labels(self) -> list[str]:
    """The class names if known, otherwise the class indices as text: the labels of tables and figures."""
    return list(self.class_names) if self.class_names else [str(i) for i in range(self.video_scores.shape[1])]

  def views_per_video(self) -> str:
    """How many views each video averaged, in words: '1 view', '30 views' or '1-4 views' (per video)."""
    low, high = int(self.video_num_views.min()), int(self.video_num_views.max())
    if low == high:
      return f'{low} view' if low == 1 else f'{low} views'
    return f'{low}-{high} views'

  def summary(self) -> str:
    """One line for people: top-1 (and top-5 with more than 5 classes), mean class accuracy, videos and views.

    With one view per video, clip and video accuracy are the same number and it is given once; with several, the
    video accuracy (views averaged) comes first, then the accuracy of single views (clips).
    """
    m = self.metrics
    if self.multi_label:
      views = ('1 view per video' if int(self.video_num_views.max()) == 1 else
               f'{self.views_per_video()} per video, {self.view_pooling} over views')
      return (f"mAP {100 * m['video_map']:.2f}% ({views}; over {m['map_classes']} classes and "
              f"{m['map_videos']} videos with a positive), hit@1 {100 * m['video_hit1']:.2f}% "
              f"({m['num_videos']} videos, {m['num_views']} views)")
    mean_class = f"mean class accuracy {100 * m['mean_class_accuracy']:.2f}%"
    if int(self.video_num_views.max()) == 1:
      return f"{_top_k(m, 'video')} (1 view per video), {mean_class} ({m['num_videos']} videos)"
    return (f"video {_top_k(m, 'video')} over {self.views_per_video()} per video, clip {_top_k(m, 'clip')}, "
            f"{mean_class} ({m['num_videos']} videos, {m['num_views']} views)")


def _top_k(metrics: dict[str, Any], level: str) -> str:
  return ' '.join(f'top-{k} {100 * metrics[f"{level}_top{k}"]:.2f}%' for k in (1, 5) if f'{level}_top{k}' in metrics)


def save_results(result: EvalResult, directory: paths.PathLike, prefix: str = 'test') -> dict[str, str]:
  """Writes ``result`` to ``directory`` (local or gs://, created if needed) as ``{prefix}_*`` files.

  Returns {kind: path}. The files are listed in this module's docstring. Files of other prefixes are never
  touched; those of the same prefix are replaced. Writing is atomic, so all processes may call it, but process 0
  alone is enough.
  """
  _check_prefix(prefix)
  directory = paths.as_path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  kinds = _MULTI_LABEL_FILES if result.multi_label else _SINGLE_LABEL_FILES
  files = {kind: directory / (prefix + _SUFFIXES[kind]) for kind in kinds}
  labels = result.class_labels()
  metrics_json = json.dumps(result.metrics, indent=2, sort_keys=True) + '\n'
  paths.write_atomic(files['metrics'], metrics_json.encode('utf-8'))
  scores = io.BytesIO()
  np.savez(scores, video_ids=result.video_ids, scores=result.video_scores, labels=result.video_labels,
           num_views=result.video_num_views, view_pooling=np.array(result.view_pooling))
  paths.write_atomic(files['video_scores'], scores.getvalue())
  if result.multi_label:
    per_class = [['class_index', 'class_name', 'num_positive_videos', 'average_precision']]
    for i, (count, ap) in enumerate(zip((result.video_labels != 0).sum(axis=0), result.per_class_ap)):
      per_class.append([i, result.class_names[i] if result.class_names else '', int(count), repr(float(ap))])
    paths.write_atomic(files['per_class_ap'], _csv_bytes(per_class))
    return {kind: os.fspath(path) for kind, path in files.items()}
  per_class = [['class_index', 'class_name', 'num_videos', 'accuracy']]
  for i, (count, accuracy) in enumerate(zip(result.confusion.sum(axis=1), result.per_class_accuracy)):
    per_class.append([i, result.class_names[i] if result.class_names else '', int(count), repr(float(accuracy))])
  paths.write_atomic(files['per_class_accuracy'], _csv_bytes(per_class))
  confusion = [['true \\ predicted'] + labels]
  confusion += [[label] + [int(x) for x in row] for label, row in zip(labels, result.confusion)]
  paths.write_atomic(files['confusion'], _csv_bytes(confusion))
  if len(labels) <= plots.MAX_PLOT_CLASSES:
    m = result.metrics
    title = f"Video-level confusion: top-1 {100 * m['video_top1']:.1f}%, {m['num_videos']} videos"
    paths.write_atomic(files['confusion_plot'], plots.png_bytes(plots.confusion_figure(result.confusion, labels,
                                                                                        title)))
  else:
    del files['confusion_plot']
  return {kind: os.fspath(path) for kind, path in files.items()}


def load_results(directory: paths.PathLike, prefix: str = 'test') -> EvalResult:
  """Reads back what ``save_results`` wrote under ``prefix`` in ``directory``."""
  _check_prefix(prefix)
  directory = paths.as_path(directory)
  path = lambda kind: directory / (prefix + _SUFFIXES[kind])  # pylint: disable=unnecessary-lambda-assignment
  metrics = json.loads(path('metrics').read_bytes())
  with np.load(io.BytesIO(path('video_scores').read_bytes()), allow_pickle=False) as z:
    ids, scores, labels, views = z['video_ids'], z['scores'], z['labels'], z['num_views']
    pooling = str(z['view_pooling']) if 'view_pooling' in z else 'mean'  # Files written before pooling was kept.
  if labels.ndim == 2:  # Multi-hot: a multi-label result.
    rows = _csv_rows(path('per_class_ap'))[1:]
    names = tuple(r[1] for r in rows)
    return EvalResult(metrics, None, None, ids, scores, labels, views, names if any(names) else None,
                      per_class_ap=np.array([float(r[3]) for r in rows]), view_pooling=pooling)
  rows = _csv_rows(path('per_class_accuracy'))[1:]
  per_class = np.array([float(r[3]) for r in rows])
  names = tuple(r[1] for r in rows)
  confusion = np.array([[int(x) for x in r[1:]] for r in _csv_rows(path('confusion'))[1:]], np.int64)
  confusion = confusion.reshape(len(rows), len(rows))
  return EvalResult(metrics, per_class, confusion, ids, scores, labels, views, names if any(names) else None,
                    view_pooling=pooling)


def _check_prefix(prefix: str) -> None:
  if not prefix or prefix != os.path.basename(prefix) or prefix.startswith('.'):
    raise ValueError(f'prefix {prefix!r} must be a plain file-name prefix such as "test" or "val_step_1000".')


def _csv_bytes(rows: Iterable[Sequence[Any]]) -> bytes:
  # Built in memory because epath's open takes no newline=''; the bytes are those open(..., newline='') wrote.
  text = io.StringIO(newline='')
  csv.writer(text).writerows(rows)
  return text.getvalue().encode('utf-8')


def _csv_rows(path: epath.Path) -> list[list[str]]:
  return list(csv.reader(io.StringIO(path.read_bytes().decode('utf-8'), newline='')))


__all__ = ['EvalResult', 'load_results', 'save_results']
