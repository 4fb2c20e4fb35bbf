"""Average precision of multi-label scores: per class, and its mean over classes (mAP), as Charades reports it.

AP of one class ranks the videos by their score for it: at each distinct score t, precision(t) is the share of
positives among the videos scoring at least t, and AP is the mean of precision over the positives, each positive
taking the precision of its own score. Without ties this is the official Charades evaluation's AP
(``Charades_v1_classify.m``: the precision at each positive's rank, averaged over positives); a group of tied
scores counts as one threshold, so the result does not depend on the order of the videos (the official code
would break such ties by input order), and it is scikit-learn's ``average_precision_score``.

Which videos and classes count (``mean_average_precision``), as the dataset's authors evaluate Charades:

- a video without any positive class is left out. The official script gives such videos a score of -inf for
  every class (they have no row in its ground-truth map; gsig/PyVideoResearch ``charades_map`` does it
  explicitly), which ranks them below every positive, where a negative changes no precision: leaving them out
  gives the same APs;
- a class without a positive among the videos evaluated has no AP (NaN in the per-class table) and is left out of
  the mean, as PySlowFast's ``get_map`` and PyVideoResearch's ``np.nanmean`` do. (The official MATLAB script
  would divide by zero and return NaN for the whole mAP; on the official test split every class has positives,
  so the rule changes none of its numbers.)
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """AP of one class: ``scores`` (N,) finite (or -inf), ``positives`` (N,) bool; NaN when there is no positive."""
  scores = np.asarray(scores, np.float64)
  positives = np.asarray(positives, bool)
  total = int(positives.sum())
  if total == 0:
    return float('nan')
  order = np.argsort(-scores, kind='stable')
  ranked, hits = scores[order], positives[order]
  true_positives = np.cumsum(hits)
  # The last row of each group of tied scores: a threshold takes in the whole group at once.
  ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
  at_threshold = true_positives[ends]
  precision = at_threshold / (ends + 1)
  new_positives = np.diff(np.r_[0, at_threshold])
  return float((new_positives * precision).sum() / total)


def per_class_average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(K,) AP of each class over the videos with at least one positive; NaN for a class without a positive.

  ``scores`` (N, K) per-video class scores, ``labels`` (N, K) multi-hot (any non-zero value is a positive).
  """
  scores, labels = np.asarray(scores), np.asarray(labels) != 0
  if scores.shape != labels.shape or scores.ndim != 2:
    raise ValueError(f'scores {scores.shape} and labels {labels.shape} must both be (videos, classes).')
  keep = labels.any(axis=1)  # Videos without a positive: see the module docstring.
  return np.array([average_precision(scores[keep, k], labels[keep, k]) for k in range(labels.shape[1])])


def mean_average_precision(per_class: np.ndarray) -> float:
  """The mean of the per-class APs over the classes that have one (a positive); NaN when none has."""
  per_class = np.asarray(per_class, np.float64)
  has = ~np.isnan(per_class)
  return float(per_class[has].mean()) if has.any() else float('nan')


__all__ = ['average_precision', 'mean_average_precision', 'per_class_average_precision']
