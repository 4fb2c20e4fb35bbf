"""The label of a training clip of a video whose actions have time intervals (Charades): the classes whose interval
overlaps the clip's time span.

The rule. Stored frame i of a video stored at ``fps`` frames per second shows the instant i / fps. A clip takes the
frames ``indices`` (``sampling.train_clip_indices``); its time span is [first / fps, last / fps], from its first to
its last frame. An action [start, end] (seconds, closed) labels the clip when the two intervals meet: start ≤ last /
fps and end ≥ first / fps. A clip that overlaps no action gets the all-zero label (a negative for every class, as
the video's frames outside all actions are). A clip of a video shorter than its window wraps around to the start
(``sampling``): its indices then form several increasing runs, each a span of its own, and the label is the union
of theirs.

Why this rule. The paper is silent on how Charades training clips are labelled, and the official non-local code has
no Charades data loader. PySlowFast's Charades loader (the reference implementation with published Charades
results) labels a clip with the union of the per-frame labels of every frame from its first sampled frame to its
last (``aggregate_labels`` over ``range(seq[0], seq[-1] + 1)``, not only the sampled frames), the per-frame labels
of its frame lists being the actions in progress at each frame. That is this rule, computed from the intervals
directly instead of from per-frame lists: an action that happens between two sampled frames (8×8 clips sample
every 8th frame, 0.27 s apart at 30 fps) is inside what the clip shows, so it is a positive. Labelling by the
sampled frames alone would make such a clip a negative for it, and the clip's label would depend on the sampling
stride. Test views are scored against the video's labels (all its actions), as the official evaluation does.

Time base: frame i at i / fps assumes a constant rate from time 0, which the preparation stores (the source rate,
or ``--max_fps`` with one frame per 1/max_fps slot).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Actions:
  """A video's action intervals and the rate of its stored frames."""
  classes: np.ndarray  # int64 (n,): class index of each action.
  starts: np.ndarray  # float (n,): start of each action, seconds.
  ends: np.ndarray  # float (n,): end of each action, seconds (≥ start).
  fps: float  # Frames per second of the stored frames.


def clip_spans(indices: np.ndarray, fps: float) -> np.ndarray:
  """The time spans of a clip's frame ``indices``, (runs, 2) rows of [first / fps, last / fps] in seconds: one per
  increasing run of indices (one, unless the clip wraps around the end of a short video)."""
  indices = np.asarray(indices, np.int64)
  if indices.size == 0 or not fps > 0:
    raise ValueError(f'A clip needs frames and a frame rate > 0, got {indices.size} frames at {fps} fps.')
  breaks = np.flatnonzero(np.diff(indices) < 0) + 1
  runs = np.split(indices, breaks)
  return np.asarray([[run[0] / fps, run[-1] / fps] for run in runs], np.float64)


def clip_label(actions: Actions, indices: np.ndarray, num_classes: int) -> np.ndarray:
  """The multi-hot float32 (num_classes,) label of the clip of frames ``indices``: the classes of the actions that
  overlap its time span (the module docstring's rule)."""
  label = np.zeros(num_classes, np.float32)
  if len(actions.classes) == 0:
    return label
  spans = clip_spans(indices, actions.fps)
  starts, ends = np.asarray(actions.starts)[:, None], np.asarray(actions.ends)[:, None]
  overlaps = ((starts <= spans[None, :, 1]) & (ends >= spans[None, :, 0])).any(axis=1)
  label[np.asarray(actions.classes, np.int64)[overlaps]] = 1.0
  return label
