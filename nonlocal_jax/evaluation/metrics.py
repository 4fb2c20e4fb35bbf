"""Classification metrics with one tie rule: top-k, the predicted class, the confusion matrix, per-class accuracy;
and its multi-label kin, hit@k (``top_k_hit``; average precision is in ``average_precision``).

Top-k with ties (``top_k_correct``): a prediction is top-k correct when fewer than k *other* classes score at
least as high as the true class, i.e. ties count against the prediction, and a NaN true-class score is never
correct. A constant predictor therefore scores 0, never 100 %, and the result does not depend on the order of the
classes (as an argsort or ``lax.top_k`` with their index tie-break would). The same function serves the train
step (jax arrays, under ``jit`` and ``shard_map``) and the evaluation (NumPy arrays on the host), so
``train/top1`` and ``val/clip_top1`` agree on the same scores. The confusion matrix breaks ties the same way (a
tie for the maximum is predicted as the lowest-index other tied class), so its trace is exactly the number of
top-1 correct videos.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Top-k accuracies the evaluation reports, where they say something (see ``reported_top_k``).
TOP_K = (1, 5)


def reported_top_k(num_classes: int) -> tuple[int, ...]:
  """The k of ``TOP_K`` worth reporting for ``num_classes`` classes: those below it (top-5 of 5 classes is 100 %)."""
  return tuple(k for k in TOP_K if k < num_classes) or (1,)


def top_k_correct(scores: Any, labels: Any, k: int) -> Any:
  """Whether each row's true class is in its top k: fewer than k other classes score at least as high.

  Ties count against the prediction; a NaN true-class score is never correct. With k ≥ C every finite row is
  correct. ``scores`` (N, C) (logits or probabilities: any order-preserving map gives the same answer, up to
  ties it creates by rounding), ``labels`` (N,) integer classes.

  Returns bool (N,): a NumPy array for NumPy inputs (computed on the host, in the scores' own precision), a jax
  array when either input is a jax array or a tracer (it then runs inside ``jit``/``shard_map``; take
  ``.astype(jnp.float32).mean()`` for an accuracy).
  """
  if isinstance(scores, jax.Array) or isinstance(labels, jax.Array):
    xp, index = jnp, jnp.int32
  else:
    xp, index = np, np.int64
  scores = xp.asarray(scores)
  labels = xp.asarray(labels).astype(index)
  true = xp.take_along_axis(scores, labels[:, None], axis=1)
  # The true class always ties with itself, hence the - 1.
  rivals = (scores >= true).sum(axis=1) - 1
  return (rivals < k) & ~xp.isnan(true[:, 0])


def top_k_hit(scores: Any, labels: Any, k: int) -> Any:
  """Multi-label top-k ("hit@k"): whether some positive class of each row is among its top k classes.

  The best-scoring positive is in the top k when fewer than k *negative* classes score at least as high (ties
  with negatives count against, as in ``top_k_correct``; another positive tied with it does not, since either way
  a positive ranks there). A row without a positive, or whose best positive score is NaN, is never a hit.
  ``scores`` (N, C), ``labels`` (N, C) multi-hot. NumPy in, NumPy out; jax in (or a tracer), jax out.
  """
  xp = jnp if isinstance(scores, jax.Array) or isinstance(labels, jax.Array) else np
  scores = xp.asarray(scores)
  positive = xp.asarray(labels) > 0
  best = xp.max(xp.where(positive, scores, -xp.inf), axis=1, keepdims=True)  # NaN propagates: never a hit.
  rivals = ((scores >= best) & ~positive).sum(axis=1)
  return (rivals < k) & positive.any(axis=1) & ~xp.isnan(best[:, 0])


def predicted_class(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Argmax of each row, except that a true class tied for the maximum loses the tie (as top_k_correct, k=1)."""
  at_max = scores == scores.max(axis=1, keepdims=True)
  rows = np.arange(len(labels))
  tied = at_max[rows, labels] & (at_max.sum(axis=1) > 1)
  at_max[rows[tied], labels[tied]] = False
  return at_max.argmax(axis=1)


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) int64 counts, rows the true class, columns ``predicted_class``."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predicted_class(scores, labels)), 1)
  return confusion


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
  """(num_classes,) top-1 accuracy of each true class (row) of ``confusion``; NaN for a class without examples."""
  totals = confusion.sum(axis=1)
  accuracy = np.full(len(confusion), np.nan)
  has = totals > 0
  accuracy[has] = np.diag(confusion)[has] / totals[has]
  return accuracy


__all__ = ['TOP_K', 'confusion_matrix', 'per_class_accuracy', 'predicted_class', 'reported_top_k', 'top_k_correct',
           'top_k_hit']
