"""Multi-view evaluation: per-view class probabilities → per-video averages → clip- and video-level metrics.

The paper's test (PAPER.md §5): K clips × 3 crops per video through the fully-convolutional network, softmax
scores averaged over the views of a video. ``evaluate(predict_fn, batches, num_classes=...)`` runs it over the
padded batches of ``nonlocal_jax.data.create_eval_dataset`` (or any iterable of such dicts) and returns an
``EvalResult``; ``save_results`` writes it to a work directory and ``load_results`` reads it back.

Top-k with ties (``top_k_correct``): a prediction is top-k correct when fewer than k *other* classes score at
least as high as the true class, i.e. ties count against the prediction. A constant predictor therefore scores
0, never 100 %, and the result does not depend on the order of the classes (as an argsort would). The
confusion matrix breaks ties the same way (a tie for the maximum is predicted as the lowest-index other tied
class), so its trace is exactly the number of top-1 correct videos.

Multi-host: each process evaluates its own videos; the per-video sums are gathered from all processes
(``jax.experimental.multihost_utils.process_allgather``) so that every process returns the same global result.
Errors in one process's data are raised on every process after the exchange, so no process is left waiting.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import uuid
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from etils import epath
import jax
import numpy as np

from nonlocal_jax import paths

# The batch field naming the example a view belongs to: videos, or images in image mode of the data pipeline.
ID_KEYS = ('video_id', 'image_id')
# Above this many classes the confusion matrix is saved as CSV only: a figure would not be readable.
MAX_PLOT_CLASSES = 100

# No suffix ends another one, so files of distinct prefixes can never share a name.
_SUFFIXES = {
    'metrics': '_metrics.json',
    'video_scores': '_video_scores.npz',
    'per_class_accuracy': '_per_class_accuracy.csv',
    'confusion': '_confusion.csv',
    'confusion_plot': '_confusion.png',
}

# Kinds of video id, as exchanged between processes.
_NO_IDS, _INT_IDS, _BYTES_IDS, _STR_IDS = 0, 1, 2, 3
_KIND_NAMES = {_INT_IDS: 'integers', _BYTES_IDS: 'bytes', _STR_IDS: 'str'}

Gather = Callable[[np.ndarray], np.ndarray]


def top_k_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """Whether each row's true class is in its top k: fewer than k other classes score at least as high.

  Ties count against the prediction; a NaN true-class score is never correct. ``scores`` (N, C), ``labels`` (N,);
  returns bool (N,). With k ≥ C every finite row is correct.
  """
  scores = np.asarray(scores)
  labels = np.asarray(labels, np.int64)
  true = np.take_along_axis(scores, labels[:, None], axis=1)
  # The true class always ties with itself, hence the - 1.
  rivals = (scores >= true).sum(axis=1) - 1
  return (rivals < k) & ~np.isnan(true[:, 0])


def _predicted_class(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  # Argmax, except that a true class tied for the maximum loses the tie: consistent with top_k_correct(k=1).
  at_max = scores == scores.max(axis=1, keepdims=True)
  rows = np.arange(len(labels))
  tied = at_max[rows, labels] & (at_max.sum(axis=1) > 1)
  at_max[rows[tied], labels[tied]] = False
  return at_max.argmax(axis=1)


@dataclasses.dataclass
class EvalResult:
  """The outcome of a multi-view evaluation, identical on every process.

  Attributes:
    metrics: clip_top1, clip_top5 (per view), video_top1, video_top5 (views averaged), mean_class_accuracy
      (video level, over the classes that have videos), num_videos, num_views; Python floats and ints.
    per_class_accuracy: (num_classes,) video-level top-1 accuracy of each class; NaN for a class without videos.
    confusion: (num_classes, num_classes) int64 video counts, rows the true class, columns the predicted class.
    video_ids: (num_videos,) sorted ids (int64, bytes or str array).
    video_scores: (num_videos, num_classes) float64 mean class probabilities over each video's views.
    video_labels: (num_videos,) int64 true classes.
    video_num_views: (num_videos,) int64 views averaged for each video.
    class_names: names of the classes, if known.
  """
  metrics: dict[str, Any]
  per_class_accuracy: np.ndarray
  confusion: np.ndarray
  video_ids: np.ndarray
  video_scores: np.ndarray
  video_labels: np.ndarray
  video_num_views: np.ndarray
  class_names: Optional[tuple[str, ...]] = None

  def summary(self) -> str:
    """One line for logs: video and clip top-1/top-5, mean class accuracy, videos and views."""
    m = self.metrics
    return (f"video top-1 {100 * m['video_top1']:.2f}% top-5 {100 * m['video_top5']:.2f}%, "
            f"clip top-1 {100 * m['clip_top1']:.2f}% top-5 {100 * m['clip_top5']:.2f}%, "
            f"mean class accuracy {100 * m['mean_class_accuracy']:.2f}% "
            f"({m['num_videos']} videos, {m['num_views']} views)")


class _InvalidData(ValueError):
  """A problem in the evaluated data itself (not in how the evaluator is called)."""


class _VideoTotals:
  """Running per-video sums of class probabilities, view counts and labels, one row per id."""

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self.kind = _NO_IDS
    self._rows: dict[Any, int] = {}
    self._sums = np.zeros((0, num_classes), np.float64)
    self._counts = np.zeros((0,), np.int64)
    self._labels = np.zeros((0,), np.int64)

  def add(self, keys: list, sums: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> None:
    """Adds rows (several may share a key): their sums and counts accumulate, their labels must agree."""
    if not keys:
      return
    kind = _id_kind(keys[0])
    if self.kind not in (_NO_IDS, kind) or any(_id_kind(k) != kind for k in keys):
      raise _InvalidData(f'Video ids mix {_KIND_NAMES[self.kind or kind]} with other types: use one type of id.')
    self.kind = kind
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

  def rows(self) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """(keys, sums, counts, labels) in insertion order."""
    n = len(self._rows)
    return list(self._rows), self._sums[:n], self._counts[:n], self._labels[:n]


def _id_kind(key) -> int:
  if isinstance(key, bytes):
    return _BYTES_IDS
  if isinstance(key, str):
    return _STR_IDS
  if isinstance(key, int) and not isinstance(key, bool):
    return _INT_IDS
  raise TypeError(f'Video ids must be integers, bytes or str, got {type(key).__name__} {key!r}.')


def _keys(ids: np.ndarray) -> list:
  # tolist() turns numpy scalars into int/bytes/str, which hash and compare as the same id across batches.
  keys = ids.tolist()
  if ids.dtype == object:
    keys = [int(k) if isinstance(k, np.integer) else k for k in keys]
  return keys


def _flat(x, n: int, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.size != n:
    raise ValueError(f'Batch field {name!r} has shape {x.shape}, but the batch has {n} examples (from "label").')
  return x.reshape(n)


def process_allgather(x: np.ndarray) -> np.ndarray:
  """``x`` of every process stacked on a new leading axis, (process_count, *x.shape); a collective."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x))


class ViewAccumulator:
  """Accumulates the scores of evaluation views batch by batch; ``result()`` gives the ``EvalResult``.

  Args:
    num_classes: number of classes of the scores.
    class_names: optional names of the classes, kept in the result for the saved files.
    gather: the all-gather between processes, ``x -> (process_count, *x.shape)`` for a uint32 array of the
      same shape on every process. Default: ``process_allgather`` when ``jax.process_count() > 1``, otherwise
      none (a single process runs no collective). Tests pass a fake one.
  """

  def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None, gather: Optional[Gather] = None):
    if num_classes < 1:
      raise ValueError(f'num_classes must be at least 1, got {num_classes}.')
    if class_names is not None:
      class_names = tuple(str(n) for n in class_names)
      if len(class_names) != num_classes:
        raise ValueError(f'{len(class_names)} class names for {num_classes} classes: pass one name per class.')
    self.num_classes = num_classes
    self.class_names = class_names
    if gather is None and jax.process_count() > 1:
      gather = process_allgather
    self._gather = gather
    self._totals = _VideoTotals(num_classes)
    self._views = self._top1 = self._top5 = 0
    self._error: Optional[str] = None

  def update(self, batch: Mapping[str, Any], scores: Any) -> None:
    """Adds one batch: ``scores`` are the class probabilities of all its rows, padding included.

    Every field may have leading device axes, e.g. (devices, B / devices, ...): the leading axes of ``label``
    define the batch, and every field (and ``scores``, as (..., num_classes)) is flattened to match. Rows with
    ``mask`` False are ignored.
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
    keep = _flat(batch['mask'], n, 'mask').astype(bool) if 'mask' in batch else np.ones(n, bool)
    scores = np.asarray(scores)
    if scores.ndim < 1 or scores.shape[-1] != self.num_classes or scores.size != n * self.num_classes:
      raise ValueError(f'predict_fn returned scores of shape {scores.shape} for a batch of {n} examples: expected '
                       f'({n}, {self.num_classes}) class probabilities (num_classes={self.num_classes}).')
    scores = scores.reshape(n, self.num_classes)[keep].astype(np.float64)
    labels, ids = labels[keep], ids[keep]
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
      raise _InvalidData(f'Label {labels[i]} of video {_keys(ids[i:i + 1])[0]!r} is outside '
                         f'[0, {self.num_classes}): num_classes does not match the dataset.')
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
      raise _InvalidData(f'predict_fn returned non-finite scores for video {_keys(ids[bad[:1]])[0]!r}: the model '
                         'diverged or its checkpoint is broken.')
    self._totals.add(_keys(ids), scores, np.ones(len(labels), np.int64), labels)
    self._views += len(labels)
    self._top1 += int(top_k_correct(scores, labels, 1).sum())
    self._top5 += int(top_k_correct(scores, labels, 5).sum())

  def result(self) -> EvalResult:
    """The global result: after gathering from all processes when there are several (a collective)."""
    totals, views, top1, top5 = self._totals, self._views, self._top1, self._top5
    if self._gather is not None:
      totals, views, top1, top5 = self._gathered()
    if views == 0:
      raise ValueError('The evaluation batches held no unmasked views: the evaluation split is empty or every '
                       'row was masked as padding.')
    keys, sums, counts, labels = totals.rows()
    ids = np.array(keys)
    order = np.argsort(ids, kind='stable')
    return _summarize(ids[order], sums[order], counts[order], labels[order], views, top1, top5,
                      self.num_classes, self.class_names)

  def _gathered(self) -> tuple[_VideoTotals, int, int, int]:
    keys, sums, counts, labels = self._totals.rows()
    kind = self._totals.kind
    encoded = [str(k).encode() if kind == _STR_IDS else k for k in keys] if kind in (_BYTES_IDS, _STR_IDS) else []
    width = max((len(k) for k in encoded), default=0)
    error = (self._error or '').encode()
    header = np.array([len(keys), kind, width, self._views, self._top1, self._top5, len(error)], np.int64)
    headers = self._all(_words(header)).view(np.int64)
    n_per, kinds, widths = headers[:, 0], headers[:, 1], headers[:, 2]
    if headers[:, 6].any():
      # Every process sees the same headers, so all of them take this branch and raise together.
      messages = self._all(_words(_padded_bytes([error], int(headers[:, 6].max()))))
      raise ValueError('; '.join(f'process {p}: {_unpad(m.view(np.uint8))[0].decode(errors="replace")}'
                                 for p, m in enumerate(messages) if headers[p, 6]))
    present = sorted(set(kinds[kinds != _NO_IDS].tolist()))
    if len(present) > 1:
      raise ValueError('Processes hold video ids of different types ('
                       f'{", ".join(_KIND_NAMES[k] for k in present)}): use one type of id.')
    kind = present[0] if present else _NO_IDS
    width = int(widths.max())
    capacity = max(int(n_per.max()), 1)  # Every process sends the same shape; never an empty array.
    if kind == _INT_IDS:
      id_columns = np.array(keys, np.int64).reshape(-1, 1)
    else:
      id_columns = _padded_bytes(encoded, width)
    table = np.concatenate([_words(sums), _words(counts[:, None]), _words(labels[:, None]),
                            _words(id_columns)], axis=1)
    table = np.concatenate([table, np.zeros((capacity - len(keys), table.shape[1]), np.uint32)])
    tables = self._all(table)
    merged = _VideoTotals(self.num_classes)
    c = self.num_classes
    for p, rows in enumerate(tables):
      rows = rows[:n_per[p]]
      id_words = np.ascontiguousarray(rows[:, 2 * c + 4:])
      if kind == _INT_IDS:
        got = id_words.view(np.int64)[:, 0].tolist()
      else:
        got = _unpad(id_words.view(np.uint8))
        if kind == _STR_IDS:
          got = [k.decode() for k in got]
      try:
        merged.add(got, np.ascontiguousarray(rows[:, :2 * c]).view(np.float64),
                   np.ascontiguousarray(rows[:, 2 * c:2 * c + 2]).view(np.int64)[:, 0],
                   np.ascontiguousarray(rows[:, 2 * c + 2:2 * c + 4]).view(np.int64)[:, 0])
      except _InvalidData as e:
        raise ValueError(f'{e} (views on different processes)') from None
    return merged, int(headers[:, 3].sum()), int(headers[:, 4].sum()), int(headers[:, 5].sum())

  def _all(self, x: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(self._gather(x))
    if out.ndim != x.ndim + 1 or out.shape[1:] != x.shape:
      raise ValueError(f'The gather function returned shape {out.shape} for an input of shape {x.shape}: it '
                       'must stack the arrays of all processes on a new leading axis.')
    return out


def _words(x: np.ndarray) -> np.ndarray:
  # Bit-exact as uint32: process_allgather without jax_enable_x64 would round float64/int64 to 32 bits.
  x = np.ascontiguousarray(x)
  return x.view(np.uint32) if x.ndim else x.reshape(1).view(np.uint32)


def _padded_bytes(items: list, width: int) -> np.ndarray:
  width = -(-width // 4) * 4  # Whole uint32 words.
  out = np.zeros((len(items), width), np.uint8)
  for i, item in enumerate(items):
    out[i, :len(item)] = np.frombuffer(item, np.uint8)
  return out


def _unpad(rows: np.ndarray) -> list[bytes]:
  rows = np.atleast_2d(rows)
  return [bytes(r).rstrip(b'\0') for r in rows]


def _summarize(ids, sums, counts, labels, views, top1, top5, num_classes, class_names) -> EvalResult:
  scores = sums / counts[:, None]
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, _predicted_class(scores, labels)), 1)
  videos_per_class = confusion.sum(axis=1)
  per_class = np.full(num_classes, np.nan)
  has = videos_per_class > 0
  per_class[has] = np.diag(confusion)[has] / videos_per_class[has]
  metrics = {
      'clip_top1': top1 / views,
      'clip_top5': top5 / views,
      'video_top1': float(top_k_correct(scores, labels, 1).mean()),
      'video_top5': float(top_k_correct(scores, labels, 5).mean()),
      'mean_class_accuracy': float(per_class[has].mean()),
      'num_videos': int(len(ids)),
      'num_views': int(views),
  }
  return EvalResult(metrics, per_class, confusion, ids, scores, labels, counts, class_names)


def evaluate(predict_fn: Callable[[Mapping[str, Any]], Any], batches: Iterable[Mapping[str, Any]], *,
             num_classes: int, class_names: Optional[Sequence[str]] = None,
             gather: Optional[Gather] = None) -> EvalResult:
  """Multi-view evaluation of ``predict_fn`` over ``batches``; the same result on every process.

  With several processes every one of them must call it (it ends in a collective), each with its own videos.

  Args:
    predict_fn: batch → class probabilities (softmax, not logits: the protocol averages probabilities) of every
      row of the batch, padding included, as (B, num_classes) or with the batch's leading device axes. It
      receives each batch exactly as ``batches`` yields it. Its output must be addressable on this process
      (NumPy, or a jax.Array of this process's rows) and a new array on every call: it is read back only after
      the next batch has been dispatched.
    batches: iterable of dicts with 'label', 'video_id' (or 'image_id'; int, bytes or str ids), 'mask' (False
      on padding; all rows count without it), and any inputs ('clips', 'image', 'view_index', ...).
    num_classes: number of classes.
    class_names: optional names of the classes, for the saved files.
    gather: the all-gather between processes (see ``ViewAccumulator``); by default the real one when
      ``jax.process_count() > 1`` and none on a single process.

  Raises:
    ValueError: a video's views disagree on its label (the message names the video), a label is outside
      [0, num_classes), scores are not finite or have the wrong shape, or there is nothing to evaluate.
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


def _check_prefix(prefix: str) -> None:
  if not prefix or prefix != os.path.basename(prefix) or prefix.startswith('.'):
    raise ValueError(f'prefix {prefix!r} must be a plain file-name prefix such as "test" or "val_step_1000".')


def _write_atomic(path: epath.Path, data: bytes) -> None:
  # A preempted or concurrent writer never leaves a half-written file under the final name. (Not mkstemp: its
  # files are private to the user whatever the umask, and it knows only local disks.)
  tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def _csv_bytes(rows: Iterable[Sequence[Any]]) -> bytes:
  # Built in memory because epath's open takes no newline=''; the bytes are those open(..., newline='') wrote.
  text = io.StringIO(newline='')
  csv.writer(text).writerows(rows)
  return text.getvalue().encode('utf-8')


def _csv_rows(path: epath.Path) -> list[list[str]]:
  return list(csv.reader(io.StringIO(path.read_bytes().decode('utf-8'), newline='')))


def _class_labels(result: EvalResult) -> list[str]:
  return list(result.class_names) if result.class_names else [str(i) for i in range(len(result.confusion))]


def save_results(result: EvalResult, directory: paths.PathLike, prefix: str = 'test') -> dict[str, str]:
  """Writes ``result`` to ``directory`` (local or gs://, created if needed) as ``{prefix}_*`` files.

  Returns {kind: path}.

  Files: ``_metrics.json``; ``_video_scores.npz`` (video_ids, scores, labels, num_views);
  ``_per_class_accuracy.csv`` (class_index, class_name, num_videos, accuracy); ``_confusion.csv`` (rows true,
  columns predicted); ``_confusion.png`` (row-normalised; only up to ``MAX_PLOT_CLASSES`` classes). Files of
  other prefixes are never touched; those of the same prefix are replaced. Writing is atomic, so all processes
  may call it, but process 0 alone is enough.
  """
  _check_prefix(prefix)
  directory = paths.as_path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  files = {kind: directory / (prefix + suffix) for kind, suffix in _SUFFIXES.items()}
  names = _class_labels(result)
  _write_atomic(files['metrics'], (json.dumps(result.metrics, indent=2, sort_keys=True) + '\n').encode('utf-8'))
  scores = io.BytesIO()
  np.savez(scores, video_ids=result.video_ids, scores=result.video_scores, labels=result.video_labels,
           num_views=result.video_num_views)
  _write_atomic(files['video_scores'], scores.getvalue())
  per_class = [['class_index', 'class_name', 'num_videos', 'accuracy']]
  for i, (count, accuracy) in enumerate(zip(result.confusion.sum(axis=1), result.per_class_accuracy)):
    per_class.append([i, result.class_names[i] if result.class_names else '', int(count), repr(float(accuracy))])
  _write_atomic(files['per_class_accuracy'], _csv_bytes(per_class))
  confusion = [['true \\ predicted'] + names]
  confusion += [[name] + [int(x) for x in row] for name, row in zip(names, result.confusion)]
  _write_atomic(files['confusion'], _csv_bytes(confusion))
  if len(names) <= MAX_PLOT_CLASSES:
    figure = io.BytesIO()
    _plot_confusion(result, names, figure)
    _write_atomic(files['confusion_plot'], figure.getvalue())
  else:
    del files['confusion_plot']
  return {kind: os.fspath(path) for kind, path in files.items()}


def _plot_confusion(result: EvalResult, names: list[str], f) -> None:
  # Figure + Agg canvas rather than pyplot: no global backend switch, no figure left open in notebooks.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  n = len(names)
  totals = result.confusion.sum(axis=1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    rates = result.confusion / totals  # Classes without videos stay NaN: drawn blank.
  size = max(4.0, 2.5 + 0.18 * n)
  fig = Figure(figsize=(size + 1.0, size))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  image = ax.imshow(rates, cmap='Blues', vmin=0.0, vmax=1.0, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='fraction of the true class')
  font = 8 if n <= 30 else 5
  ax.set_xticks(range(n), names, rotation=90, fontsize=font)
  ax.set_yticks(range(n), names, fontsize=font)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  m = result.metrics
  ax.set_title(f"Video-level confusion: top-1 {100 * m['video_top1']:.1f}%, {m['num_videos']} videos")
  if n <= 20:
    for (i, j), count in np.ndenumerate(result.confusion):
      if count:
        ax.text(j, i, str(count), ha='center', va='center', fontsize=7,
                color='white' if rates[i, j] > 0.5 else 'black')
  fig.tight_layout()
  fig.savefig(f, format='png', dpi=100)


def load_results(directory: paths.PathLike, prefix: str = 'test') -> EvalResult:
  """Reads back what ``save_results`` wrote under ``prefix`` in ``directory``."""
  _check_prefix(prefix)
  directory = paths.as_path(directory)
  path = lambda kind: directory / (prefix + _SUFFIXES[kind])  # pylint: disable=unnecessary-lambda-assignment
  metrics = json.loads(path('metrics').read_bytes())
  with np.load(io.BytesIO(path('video_scores').read_bytes()), allow_pickle=False) as z:
    ids, scores, labels, views = z['video_ids'], z['scores'], z['labels'], z['num_views']
  rows = _csv_rows(path('per_class_accuracy'))[1:]
  per_class = np.array([float(r[3]) for r in rows])
  names = tuple(r[1] for r in rows)
  confusion = np.array([[int(x) for x in r[1:]] for r in _csv_rows(path('confusion'))[1:]], np.int64)
  confusion = confusion.reshape(len(rows), len(rows))
  return EvalResult(metrics, per_class, confusion, ids, scores, labels, views, names if any(names) else None)


__all__ = ['EvalResult', 'ViewAccumulator', 'evaluate', 'load_results', 'process_allgather', 'save_results',
           'top_k_correct', 'MAX_PLOT_CLASSES']
