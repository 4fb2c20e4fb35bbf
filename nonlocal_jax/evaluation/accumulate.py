"""Multi-view evaluation: per-view class probabilities → per-video averages → clip- and video-level metrics.

The paper's test (docs/paper.md §5): K clips × 3 crops per video through the fully-convolutional network, softmax
scores averaged over the views of a video. ``evaluate(predict_fn, batches, num_classes=...)`` runs it over the
padded batches of ``nonlocal_jax.data.create_eval_dataset`` (or any iterable of such dicts) and returns an
``EvalResult``; ``ViewAccumulator`` is the same batch by batch. A config with one view per video (one clip, one
crop) is evaluated the same way: its clip and video metrics are then equal.

Multi-host: each process evaluates its own videos and ``result()`` gathers the per-video sums of all processes
(see ``gather``), so that every process returns the same global result.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np

from nonlocal_jax.evaluation import gather as gather_lib
from nonlocal_jax.evaluation import metrics as metrics_lib
from nonlocal_jax.evaluation import results

# The batch field naming the example a view belongs to: videos, or images in image mode of the data pipeline.
ID_KEYS = ('video_id', 'image_id')


class _InvalidData(ValueError):
  """A problem in the evaluated data itself (not in how the evaluator is called)."""


class _VideoTotals:
  """Running per-video sums of class probabilities, view counts and labels, one row per integer id."""

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self._rows: dict[int, int] = {}
    self._sums = np.zeros((0, num_classes), np.float64)
    self._counts = np.zeros((0,), np.int64)
    self._labels = np.zeros((0,), np.int64)

  def add(self, keys: list[int], sums: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> None:
    """Adds rows (several may share a key): their sums and counts accumulate, their labels must agree."""
    if not keys:
      return
    before = len(self._rows)
    slots = np.fromiter((self._rows.setdefault(k, len(self._rows)) for k in keys), np.int64, len(keys))
    self._grow(len(self._rows))
    new = slots >= before
    # Last writer wins among new duplicates; the check below then catches any disagreement, old or new.
    self._labels[slots[new]] = labels[new]
    wrong = np.flatnonzero(self._labels[slots] != labels)
    if wrong.size:
      i = wrong[0]
      raise _InvalidData(f'Video {keys[i]!r} has views with different labels ({self._labels[slots[i]]} and '
                         f'{labels[i]}): the evaluation data is inconsistent; check how its ids are made.')
    np.add.at(self._sums, slots, sums)
    np.add.at(self._counts, slots, counts)

  def _grow(self, size: int) -> None:
    capacity = len(self._counts)
    if size <= capacity:
      return
    capacity = max(size, 2 * capacity, 64)
    extra = capacity - len(self._counts)
    self._sums = np.concatenate([self._sums, np.zeros((extra, self.num_classes), np.float64)])
    self._counts = np.concatenate([self._counts, np.zeros((extra,), np.int64)])
    self._labels = np.concatenate([self._labels, np.zeros((extra,), np.int64)])

  def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids int64, sums, counts, labels) in insertion order."""
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
  """

  def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None,
               gather: Optional[gather_lib.Gather] = None):
    if num_classes < 1:
      raise ValueError(f'num_classes must be at least 1, got {num_classes}.')
    if class_names is not None:
      class_names = tuple(str(n) for n in class_names)
      if len(class_names) != num_classes:
        raise ValueError(f'{len(class_names)} class names for {num_classes} classes: pass one name per class.')
    self.num_classes = num_classes
    self.class_names = class_names
    if gather is None and jax.process_count() > 1:
      gather = gather_lib.process_allgather
    self._gather = gather
    self._totals = _VideoTotals(num_classes)
    self._views = self._top1 = self._top5 = 0
    self._error: Optional[str] = None

  def update(self, batch: Mapping[str, Any], scores: Any) -> None:
    """Adds one batch: ``scores`` are the class probabilities of all its rows, padding included.

    Every field may have leading device axes, e.g. (devices, B / devices, ...): the leading axes of ``label``
    define the batch, and every field (and ``scores``, as (..., num_classes)) is flattened to match. Rows with
    ``mask`` False are ignored. Ids must be integers, as the data pipeline makes them.
    """
    if 'label' not in batch:
      raise ValueError(f'The evaluation batch has no "label" field (fields: {sorted(batch)}).')
    id_key = next((k for k in ID_KEYS if k in batch), None)
    if id_key is None:
      raise ValueError(f'The evaluation batch has none of the id fields {ID_KEYS} (fields: {sorted(batch)}).')
    labels = np.asarray(batch['label'])
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
    self._top1 += int(metrics_lib.top_k_correct(scores, labels, 1).sum())
    self._top5 += int(metrics_lib.top_k_correct(scores, labels, 5).sum())

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
    return _summarize(ids[order], sums[order], counts[order], labels[order], views, top1, top5,
                      self.num_classes, self.class_names)

  def _gathered(self) -> tuple[_VideoTotals, int, int, int]:
    ids, sums, counts, labels = self._totals.rows()
    share = gather_lib.Share(ids, sums, counts, labels, self._views, self._top1, self._top5, self._error or '')
    shares = gather_lib.exchange(share, self._gather)
    merged = _VideoTotals(self.num_classes)
    for s in shares:
      try:
        merged.add(s.ids.tolist(), s.sums, s.counts, s.labels)
      except _InvalidData as e:
        raise ValueError(f'{e} (views on different processes)') from None
    return (merged, sum(s.views for s in shares), sum(s.top1 for s in shares), sum(s.top5 for s in shares))


def _summarize(ids, sums, counts, labels, views, top1, top5, num_classes, class_names) -> results.EvalResult:
  scores = sums / counts[:, None]
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


def evaluate(predict_fn: Callable[[Mapping[str, Any]], Any], batches: Iterable[Mapping[str, Any]], *,
             num_classes: int, class_names: Optional[Sequence[str]] = None,
             gather: Optional[gather_lib.Gather] = None) -> results.EvalResult:
  """Evaluation of ``predict_fn`` over ``batches``, views averaged per video; the same result on every process.

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

  Raises:
    ValueError: a video's views disagree on its label (the message names the video), a label is outside
      [0, num_classes), ids are not integers, scores are not finite or have the wrong shape, or there is nothing
      to evaluate.
  """
  accumulator = ViewAccumulator(num_classes, class_names, gather)
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


__all__ = ['ID_KEYS', 'ViewAccumulator', 'evaluate']
