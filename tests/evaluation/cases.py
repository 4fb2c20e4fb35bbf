"""A fake model whose class probabilities are known exactly, the batches it sees, and the metrics by hand.

Six classes, six videos, twelve views. Every score is a multiple of 1/16, so view averages are exact in floating
point and ties are exact ties.
"""

import threading

import numpy as np

NUM_CLASSES = 6
LABELS = {'a': 0, 'b': 2, 'c': 5, 'd': 1, 'e': 3, 'f': 2}

# Class probabilities of each view, (video, view_index) → scores. Per view, with the rule "top-k correct when
# fewer than k other classes score at least as high as the true class", the other classes at or above the true
# score are ("rivals"):
TABLE = {
    ('a', 0): [.5, .25, .25, 0, 0, 0],  # 0 rivals: top-1 and top-5.
    ('a', 1): [.25, .5, .25, 0, 0, 0],  # 2 rivals (class 1 above, class 2 tied): top-5 only.
    ('b', 0): [0, 0, .75, .25, 0, 0],  # 0 rivals: top-1 and top-5.
    ('b', 1): [0, 0, .5, .5, 0, 0],  # 1 rival (tie with class 3): top-5 only.
    ('c', 0): [.25, .25, .25, .25, 0, 0],  # 5 rivals (class 4 ties at 0): neither.
    ('c', 1): [.5, .5, 0, 0, 0, 0],  # 5 rivals: neither.
    ('c', 2): [0, 0, 0, 0, .5, .5],  # 1 rival (tie with class 4): top-5 only.
    ('c', 3): [0, 0, 0, 0, 0, 1],  # 0 rivals: top-1 and top-5.
    ('d', 0): [.125, .125, .25, .25, .25, 0],  # 4 rivals (classes 2, 3, 4 above, 0 tied): top-5 only.
    ('e', 0): [.5, .5, 0, 0, 0, 0],  # 5 rivals: neither.
    ('e', 1): [0, 0, .5, 0, .5, 0],  # 5 rivals: neither.
    ('f', 0): [0, 0, 1, 0, 0, 0],  # 0 rivals: top-1 and top-5.
}
# What the model says for rows it was not given a score for (padding): class 0 with certainty.
PAD_SCORES = [1., 0, 0, 0, 0, 0]

# Views averaged per video, by hand:
VIDEO_SCORES = {
    'a': [.375, .375, .25, 0, 0, 0],  # True class 0 tied with class 1: not top-1 (predicted 1), top-5.
    'b': [0, 0, .625, .375, 0, 0],  # Top-1 (predicted 2).
    'c': [.1875, .1875, .0625, .0625, .125, .375],  # Top-1 (predicted 5).
    'd': [.125, .125, .25, .25, .25, 0],  # 4 rivals: top-5 only (predicted 2, the first maximum).
    'e': [.25, .25, .25, 0, .25, 0],  # 5 rivals: neither (predicted 0).
    'f': [0, 0, 1, 0, 0, 0],  # Top-1 (predicted 2).
}
NUM_VIEWS = {'a': 2, 'b': 2, 'c': 4, 'd': 1, 'e': 2, 'f': 1}
EXPECTED_METRICS = {
    'clip_top1': 4 / 12,  # a0, b0, c3, f0.
    'clip_top5': 8 / 12,  # a0, a1, b0, b1, c2, c3, d0, f0.
    'video_top1': 3 / 6,  # b, c, f.
    'video_top5': 5 / 6,  # All but e.
    'mean_class_accuracy': 2 / 5,  # Classes 0..5 except 4 (no videos): 0 (a), 0 (d), 1 (b, f), 0 (e), 1 (c).
    'num_videos': 6,
    'num_views': 12,
}
EXPECTED_PER_CLASS = [0., 0., 1., 0., np.nan, 1.]
# (true, predicted) of each video.
EXPECTED_CONFUSION_CELLS = {(0, 1): 1, (2, 2): 2, (5, 5): 1, (1, 2): 1, (3, 0): 1}

# Views in an order where videos a, c and e are split over batches of 5, and views come out of order.
VIEW_ORDER = [('c', 3), ('a', 1), ('e', 0), ('b', 1), ('c', 0), ('f', 0), ('d', 0), ('c', 2), ('a', 0), ('e', 1),
              ('b', 0), ('c', 1)]

# Integer ids, as the data pipeline makes them; it pads with id 0.
IDS = {name: 11 + i for i, name in enumerate('abcdef')}
PAD_ID = 0


def expected_confusion():
  """The (6, 6) confusion matrix of EXPECTED_CONFUSION_CELLS."""
  confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  for cell, count in EXPECTED_CONFUSION_CELLS.items():
    confusion[cell] = count
  return confusion


def make_batches(views, batch_size, devices=None, pad_batches=0):
  """Padded batches of ``views`` ((name, view_index) pairs) as the data pipeline yields them.

  Padding rows are zeros (id 0, label 0, mask False) like the pipeline's; ``devices`` reshapes every field to
  (devices, batch_size / devices, ...); ``pad_batches`` fully masked batches follow.
  """
  chunks = [views[i:i + batch_size] for i in range(0, len(views), batch_size)] + [[]] * pad_batches
  batches = []
  for chunk in chunks:
    pad = batch_size - len(chunk)
    batch = {
        'clips': np.zeros((batch_size, 2, 1, 1, 3), np.float32),
        'video_id': np.array([IDS[n] for n, _ in chunk] + [PAD_ID] * pad, np.int32),
        'label': np.array([LABELS[n] for n, _ in chunk] + [0] * pad, np.int32),
        'view_index': np.array([v for _, v in chunk] + [0] * pad, np.int32),
        'mask': np.array([True] * len(chunk) + [False] * pad),
    }
    if devices:
      batch = {k: x.reshape((devices, batch_size // devices) + x.shape[1:]) for k, x in batch.items()}
    batches.append(batch)
  return batches


def fake_predict(keep_device_axis=False):
  """A predict_fn returning TABLE's scores for each row's (video, view_index), PAD_SCORES for unknown rows."""
  names = {i: n for n, i in IDS.items()}

  def predict(batch):
    ids = np.asarray(batch['video_id']).reshape(-1).tolist()
    views = np.asarray(batch['view_index']).reshape(-1).tolist()
    scores = np.array([TABLE.get((names.get(i), v), PAD_SCORES) for i, v in zip(ids, views)], np.float32)
    if keep_device_axis:
      return scores.reshape(np.shape(batch['label']) + (NUM_CLASSES,))
    return scores

  return predict


class FakeProcesses:
  """Threads standing in for processes: ``gather_for(p)`` is process p's all-gather (stacks all inputs)."""

  def __init__(self, count, timeout=20.0):
    self.count = count
    self._barrier = threading.Barrier(count, timeout=timeout)
    self._inputs = [None] * count
    self.calls = [0] * count

  def gather_for(self, p):
    """The gather of process p: blocks until every process has called its own, like a collective."""

    def gather(x):
      self.calls[p] += 1
      self._inputs[p] = np.array(x, copy=True)
      self._barrier.wait()
      out = np.stack(self._inputs)  # Fails if the processes sent different shapes.
      self._barrier.wait()
      return out

    return gather

  def run(self, fn):
    """Runs fn(p) for every process in its own thread; returns the results, or the exceptions raised."""
    results = [None] * self.count

    def target(p):
      try:
        results[p] = fn(p)
      except BaseException as e:  # pylint: disable=broad-except
        results[p] = e

    threads = [threading.Thread(target=target, args=(p,)) for p in range(self.count)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    return results


def assert_same_result(a, b):
  """Two EvalResults are equal, exactly."""
  assert a.metrics == b.metrics
  for field in ('per_class_accuracy', 'confusion', 'video_ids', 'video_scores', 'video_labels', 'video_num_views'):
    x, y = getattr(a, field), getattr(b, field)
    assert x.dtype.kind == y.dtype.kind, field
    np.testing.assert_array_equal(x, y, err_msg=field)
  assert a.class_names == b.class_names


# Two processes' shares: uneven (4 videos and 8 views against 3 videos and 4 views), video c split between them.
PROCESS_VIEWS = (
    [('a', 1), ('b', 0), ('c', 0), ('e', 0), ('a', 0), ('c', 1), ('b', 1), ('e', 1)],
    [('f', 0), ('c', 3), ('d', 0), ('c', 2)],
)
