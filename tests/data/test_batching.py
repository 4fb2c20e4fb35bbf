"""Batches filled row by row from several threads and handed out in order."""

import random
import threading

import numpy as np

from nonlocal_jax.data import batching


def _make(made, size):
  def make():
    made.append(1)
    return {'x': np.zeros(size, np.int64), 'mask': np.zeros(size, bool)}
  return make


def test_rows_written_from_threads_in_any_order_land_in_their_batches():
  made = []
  batches = batching.RowBatches(4, _make(made, 4))
  positions = list(range(11))
  random.Random(0).shuffle(positions)

  def write(share):
    for p in share:
      arrays, row = batches.row(p)
      arrays['x'][row], arrays['mask'][row] = 100 + p, True
  threads = [threading.Thread(target=write, args=(positions[i::3],)) for i in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(made) == 3  # Batches 0, 1, 2: each made once, however many threads reached it first.
  got = [batches.take(b) for b in range(3)]
  np.testing.assert_array_equal(np.concatenate([g['x'] for g in got]), list(range(100, 111)) + [0])
  np.testing.assert_array_equal(np.concatenate([g['mask'] for g in got]), [True] * 11 + [False])


def test_a_batch_is_not_held_after_it_is_taken_and_an_unwritten_one_is_padding():
  made = []
  batches = batching.RowBatches(2, _make(made, 2))
  arrays, row = batches.row(3)
  arrays['x'][row] = 7
  taken = batches.take(1)
  assert taken['x'].tolist() == [0, 7]
  assert batches.take(1)['x'].tolist() == [0, 0]  # A new one: the taken batch is no longer held.
  assert not batches.take(9)['mask'].any() and len(made) == 3
