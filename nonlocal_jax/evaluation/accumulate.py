"""Multi-view evaluation: per-view class probabilities → per-video scores → clip- and video-level metrics.

The paper's test (docs/paper.md §5): K clips × 3 crops per video through the fully-convolutional network, softmax
scores averaged over the views of a video. Multi-label datasets (``multi_label=True``: labels are multi-hot rows,
scores per-class sigmoids) are scored by mean average precision (``average_precision``), their views pooled by
their maximum as the official Charades evaluation does (``view_pooling``; the mean stays an option).
``evaluate(predict_fn, batches, num_classes=...)`` runs it over the padded batches of
``nonlocal_jax.data.create_eval_dataset`` (or any iterable of such dicts) and returns an ``EvalResult``;
``ViewAccumulator`` is the same batch by batch. A config with one view per video (one clip, one crop) is evaluated
the same way: its clip and video metrics are then equal.

Multi-host: each process evaluates its own videos and ``result()`` gathers the per-video sums of all processes
(see ``gather``), so that every process returns the same global result.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np

from nonlocal_jax.evaluation import average_precision as ap_lib
from nonlocal_jax.evaluation import gather as gather_lib
from nonlocal_jax.evaluation import metrics as metrics_lib
from nonlocal_jax.evaluation import results

# The batch field naming the example a view belongs to: videos, or images in image mode of the data pipeline.
ID_KEYS = ('video_id', 'image_id')
# How a video's view scores become its score (``config.data.test_view_pooling`` adds 'auto': max for multi-label
# datasets, mean for the others).
VIEW_POOLING = ('mean', 'max')


class _InvalidData(ValueError):
  """A problem in the evaluated data itself (not in how the evaluator is called)."""


def _label_text(label: np.ndarray) -> str:
  # A class, or a multi-hot row as its positive classes.
  return str(int(label)) if label.ndim == 0 else f'classes {np.flatnonzero(label).tolist()}'


class _VideoTotals:
  """Running per-video pooled class probabilities (sums for mean pooling, maxima for max), view counts and labels
  (a class, or a multi-hot row of ``label_width``), one row per integer id."""

  def __init__(self, num_classes: int, pooling: str = 'mean', label_width: int = 0):
    self.num_classes = num_classes
    self.pooling = pooling
    self._rows: dict[int, int] = {}
    self._sums = np.zeros((0, num_classes), np.float64)
    self._counts = np.zeros((0,), np.int64)
    self._labels = np.zeros((0, label_width) if label_width else (0,), np.int64)

  def add(self, keys: list[int], sums: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> None:
    """Adds rows (several may share a key): their scores pool and counts add up, their labels must agree."""
    if not keys:
      return
    before = len(self._rows)
    slots = np.fromiter((self._rows.setdefault(k, len(self._rows)) for k in keys), np.int64, len(keys))
    self._grow(len(self._rows))
    new = slots >= before
    # Last writer wins among new duplicates; the check below then catches any disagreement, old or new.
    self._labels[slots[new]] = labels[new]
    wrong = np.flatnonzero((self._labels[slots] != labels).reshape(len(keys), -1).any(axis=1))
    if wrong.size:
      i = wrong[0]
      raise _InvalidData(f'Video {keys[i]!r} has views with different labels ({_label_text(self._labels[slots[i]])} '
                         f'and {_label_text(labels[i])}): the evaluation data is inconsistent; check how its ids '
                         'are made.')
    (np.maximum if self.pooling == 'max' else np.add).at(self._sums, slots, sums)
    np.add.at(self._counts, slots, counts)

  def _grow(self, size: int) -> None:
    capacity = len(self._counts)
    if size <= capacity:
      return
    capacity = max(size, 2 * capacity, 64)
    extra = capacity - len(self._counts)
    start = -np.inf if self.pooling == 'max' else 0.0
    self._sums = np.concatenate([self._sums, np.full((extra, self.num_classes), start, np.float64)])
    self._counts = np.concatenate([self._counts, np.zeros((extra,), np.int64)])
    self._labels = np.concatenate([self._labels, np.zeros((extra,) + self._labels.shape[1:], np.int64)])

  def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids int64, pooled scores, counts, labels) in insertion order."""
    n = len(self._rows)
    return np.array(list(self._rows), np.int64), self._sums[:n], self._counts[:n], self._labels[:n]


def _flat(x, n: int, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.size != n:
    raise ValueError(f'Batch field {name!r} has shape {x.shape}, but the batch has {n} examples (from "label").')
  return x.reshape(n)


class ViewAccumulator:
  """Accumulates the scores of evaluation views batch by batch; ``result()`` gives the ``EvalResult``.

  Args:
    num_classes: number of classes of the scores.
    class_names: optional names of the classes (one per class, in class-index order), kept in the result for the
      per-class table and the figures; without them those use the class indices.
    gather: the all-gather between processes (``gather.Gather``). Default: ``gather.process_allgather`` when
      ``jax.process_count() > 1``, otherwise none (a single process runs no collective). Tests pass a fake one.
    multi_label: labels are multi-hot rows (num_classes,) of 0/1, scores per-class probabilities (sigmoids);
      the result then reports mean average precision and hit@k instead of top-k accuracy and a confusion matrix.
    view_pooling: how a video's views make its scores: 'mean' (the paper's Kinetics test) or 'max' (the
      official Charades evaluation); default 'max' for multi-label, else 'mean'.
  """

  def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None,
               gather: Optional[gather_lib.Gather] = None, *, multi_label: bool = False,
               view_pooling: Optional[str] = None):
    if num_classes < 1:
      raise ValueError(f'num_classes must be at least 1, got {num_classes}.')
    view_pooling = view_pooling or ('max' if multi_label else 'mean')
    if view_pooling not in VIEW_POOLING:
      raise ValueError(f'view_pooling={view_pooling!r}: use one of {VIEW_POOLING}.')
    if class_names is not None:
      class_names = tuple(str(n) for n in class_names)
      if len(class_names) != num_classes:
        raise ValueError(f'{len(class_names)} class names for {num_classes} classes: pass one name per class.')
    self.num_classes = num_classes
    self.class_names = class_names
    if gather is None and jax.process_count() > 1:
      gather = gather_lib.process_allgather
    self._gather = gather
    self.multi_label = multi_label
    self.view_pooling = view_pooling
    self._totals = self._new_totals()
    self._views = self._top1 = self._top5 = 0
    self._error: Optional[str] = None

  def _new_totals(self) -> _VideoTotals:
    return _VideoTotals(self.num_classes, self.view_pooling, self.num_classes if self.multi_label else 0)

  def update(self, batch: Mapping[str, Any], scores: Any) -> None:
    """Adds one batch: ``scores`` are the class probabilities of all its rows, padding included.

    Every field may have leading device axes, e.g. (devices, B / devices, ...): the leading axes of ``label``
    define the batch (multi-label: all but its last, the classes), and every field (and ``scores``, as (...,
    num_classes)) is flattened to match. Rows with ``mask`` False are ignored. Ids must be integers, as the data
    pipeline makes them.
    """
    if 'label' not in batch:
      raise ValueError(f'The evaluation batch has no "label" field (fields: {sorted(batch)}).')
    id_key = next((k for k in ID_KEYS if k in batch), None)
    if id_key is None:
      raise ValueError(f'The evaluation batch has none of the id fields {ID_KEYS} (fields: {sorted(batch)}).')
    labels = np.asarray(batch['label'])
    if self.multi_label:
      if labels.ndim < 2 or labels.shape[-1] != self.num_classes:
        raise ValueError(f'Batch field "label" has shape {labels.shape}: a multi-label evaluation wants multi-hot '
                         f'rows of num_classes={self.num_classes} (the dataset and the evaluation disagree).')
      n = labels.size // self.num_classes
      labels = labels.reshape(n, self.num_classes)
    else:
      n = labels.size
      labels = labels.reshape(n).astype(np.int64)
    ids = _flat(batch[id_key], n, id_key)
    if not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f'Batch field {id_key!r} holds {ids.dtype} values: ids must be integers (one per video, '
                       'shared by its views), as nonlocal_jax.data.create_eval_dataset makes them.')
    keep = _flat(batch['mask'], n, 'mask').astype(bool) if 'mask' in batch else np.ones(n, bool)
    scores = np.asarray(scores)
    if scores.ndim < 1 or scores.shape[-1] != self.num_classes or scores.size != n * self.num_classes:
      raise ValueError(f'predict_fn returned scores of shape {scores.shape} for a batch of {n} examples: expected '
                       f'({n}, {self.num_classes}) class probabilities (num_classes={self.num_classes}).')
    scores = scores.reshape(n, self.num_classes)[keep].astype(np.float64)
    labels, ids = labels[keep], ids[keep].astype(np.int64)
    try:
      self._add_views(scores, labels, ids)
    except _InvalidData as e:
      if self._gather is None:
        raise
      # With other processes waiting in the gather of result(), raising here would leave them hanging forever.
      self._error = self._error or str(e)

  def _add_views(self, scores: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> None:
    if self._error is not None or not len(labels):
      return
    if self.multi_label:
      not_binary = np.flatnonzero(((labels != 0) & (labels != 1)).any(axis=1))
      if not_binary.size:
        i = not_binary[0]
        raise _InvalidData(f'The multi-hot label of video {ids[i]} holds values other than 0 and 1: the dataset '
                           'is not multi-label as the evaluation was told.')
      labels = labels.astype(np.int64)  # Checked first: a cast would turn 0.5 into 0.
    else:
      out_of_range = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
      if out_of_range.size:
        i = out_of_range[0]
        raise _InvalidData(f'Label {labels[i]} of video {ids[i]} is outside [0, {self.num_classes}): num_classes '
                           'does not match the dataset.')
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
      raise _InvalidData(f'predict_fn returned non-finite scores for video {ids[bad[0]]}: the model diverged or '
                         'its checkpoint is broken.')
    self._totals.add(ids.tolist(), scores, np.ones(len(labels), np.int64), labels)
    self._views += len(labels)
    right = metrics_lib.top_k_hit if self.multi_label else metrics_lib.top_k_correct
    self._top1 += int(right(scores, labels, 1).sum())
    self._top5 += int(right(scores, labels, 5).sum())

  def result(self) -> results.EvalResult:
    """The global result: after gathering from all processes when there are several (a collective)."""
    totals, views, top1, top5 = self._totals, self._views, self._top1, self._top5
    if self._gather is not None:
      totals, views, top1, top5 = self._gathered()
    if views == 0:
      raise ValueError('The evaluation batches held no unmasked views: the evaluation split is empty or every '
                       'row was masked as padding.')
    ids, sums, counts, labels = totals.rows()
    order = np.argsort(ids, kind='stable')
    ids, sums, counts, labels = ids[order], sums[order], counts[order], labels[order]
    scores = sums / counts[:, None] if self.view_pooling == 'mean' else sums
    summarize = _summarize_multi_label if self.multi_label else _summarize
    result = summarize(ids, scores, counts, labels, views, top1, top5, self.num_classes, self.class_names)
    result.view_pooling = self.view_pooling
    return result

  def _gathered(self) -> tuple[_VideoTotals, int, int, int]:
    ids, sums, counts, labels = self._totals.rows()
    share = gather_lib.Share(ids, sums, counts, labels, self._views, self._top1, self._top5, self._error or '')
    shares = gather_lib.exchange(share, self._gather)
    merged = self._new_totals()
    for s in shares:
      try:
        merged.add(s.ids.tolist(), s.sums, s.counts, s.labels)
      except _InvalidData as e:
        raise ValueError(f'{e} (views on different processes)') from None
    return (merged, sum(s.views for s in shares), sum(s.top1 for s in shares), sum(s.top5 for s in shares))


def _summarize(ids, scores, counts, labels, views, top1, top5, num_classes, class_names) -> results.EvalResult:
  confusion = metrics_lib.confusion_matrix(scores, labels, num_classes)
  per_class = metrics_lib.per_class_accuracy(confusion)
  metrics = {
      'clip_top1': top1 / views,
      'clip_top5': top5 / views,
      'video_top1': float(metrics_lib.top_k_correct(scores, labels, 1).mean()),
      'video_top5': float(metrics_lib.top_k_correct(scores, labels, 5).mean()),
      'mean_class_accuracy': float(per_class[~np.isnan(per_class)].mean()),
      'num_videos': int(len(ids)),
      'num_views': int(views),
  }
  if 5 not in metrics_lib.reported_top_k(num_classes):
    del metrics['clip_top5'], metrics['video_top5']
  return results.EvalResult(metrics, per_class, confusion, ids, scores, labels, counts, class_names)


def _summarize_multi_label(ids, scores, counts, labels, views, hit1, hit5, num_classes,
                           class_names) -> results.EvalResult:
  per_class_ap = ap_lib.per_class_average_precision(scores, labels)
  metrics = {
      'video_map': ap_lib.mean_average_precision(per_class_ap),
      'clip_hit1': hit1 / views,
      'clip_hit5': hit5 / views,
      'video_hit1': float(metrics_lib.top_k_hit(scores, labels, 1).mean()),
      'video_hit5': float(metrics_lib.top_k_hit(scores, labels, 5).mean()),
      # What the mean is over: classes with a positive, videos with a positive (see average_precision).
      'map_classes': int((~np.isnan(per_class_ap)).sum()),
      'map_videos': int(labels.any(axis=1).sum()),
      'num_videos': int(len(ids)),
      'num_views': int(views),
  }
  if 5 not in metrics_lib.reported_top_k(num_classes):
    del metrics['clip_hit5'], metrics['video_hit5']
  return results.EvalResult(metrics, None, None, ids, scores, labels, counts, class_names,
                            per_class_ap=per_class_ap)


def evaluate(predict_fn: Callable[[Mapping[str, Any]], Any], batches: Iterable[Mapping[str, Any]], *,
             num_classes: int, class_names: Optional[Sequence[str]] = None,
             gather: Optional[gather_lib.Gather] = None, multi_label: bool = False,
             view_pooling: Optional[str] = None) -> results.EvalResult:
  """Evaluation of ``predict_fn`` over ``batches``, views pooled per video; the same result on every process.

  With several processes every one of them must call it (it ends in a collective), each with its own videos.

  Args:
    predict_fn: batch → class probabilities (softmax, not logits: the protocol averages probabilities) of every
      row of the batch, padding included, as (B, num_classes) or with the batch's leading device axes. It
      receives each batch exactly as ``batches`` yields it. Its output must be addressable on this process
      (NumPy, or a jax.Array of this process's rows) and a new array on every call: it is read back only after
      the next batch has been dispatched.
    batches: iterable of dicts with 'label', 'video_id' (or 'image_id'; integer ids), 'mask' (False on padding;
      all rows count without it), and any inputs ('clips', 'image', 'view_index', ...).
    num_classes: number of classes.
    class_names: optional names of the classes, one per class in class-index order (e.g. the dataset's label
      names), for the per-class table and the figures.
    gather: the all-gather between processes (see ``ViewAccumulator``); by default the real one when
      ``jax.process_count() > 1`` and none on a single process.
    multi_label: multi-hot labels (B, num_classes) and per-class probabilities: mAP and hit@k (``ViewAccumulator``).
    view_pooling: 'mean' or 'max' over a video's views; None: 'max' when multi_label, else 'mean'.

  Raises:
    ValueError: a video's views disagree on its label (the message names the video), a label is outside
      [0, num_classes), ids are not integers, scores are not finite or have the wrong shape, or there is nothing
      to evaluate.
  """
  accumulator = ViewAccumulator(num_classes, class_names, gather, multi_label=multi_label, view_pooling=view_pooling)
  pending = None
  for batch in batches:
    # Dispatch the next batch before reading back the previous one: a jitted predict_fn runs asynchronously, so
    # the device works on batch i + 1 while the host copies and accumulates batch i.
    scores = predict_fn(batch)
    if pending is not None:
      accumulator.update(*pending)
    pending = (batch, scores)
  if pending is not None:
    accumulator.update(*pending)
  return accumulator.result()


__all__ = ['ID_KEYS', 'VIEW_POOLING', 'ViewAccumulator', 'evaluate']
