"""The pipelines' worker threads: order, errors in place, and a stream dropped at interpreter exit."""

import random
import time

import pytest

from nonlocal_jax.data import workers


def _slow_square(i):
  time.sleep(random.Random(i).uniform(0, 0.004))  # Later items often finish first.
  return i * i


@pytest.mark.parametrize('threads', [1, 4])
def test_results_come_in_input_order_whatever_finishes_first(threads):
  assert list(workers.ordered_map(_slow_square, range(40), threads, ahead=8)) == [i * i for i in range(40)]


def test_an_error_is_raised_at_its_items_place():
  def fn(i):
    if i == 5:
      raise ValueError('item 5')
    return i
  stream = workers.ordered_map(fn, range(10), 3, ahead=4)
  assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
  with pytest.raises(ValueError, match='item 5'):
    next(stream)


def test_closing_a_stream_needs_none_of_the_modules_globals(monkeypatch):
  # At interpreter exit a stream still open is closed after its module's globals were set to None; its clean-up
  # then printed "Exception ignored ... 'NoneType' object has no attribute 'is_finalizing'".
  stream = workers.ordered_map(_slow_square, range(100), 2, ahead=4)
  assert next(stream) == 0
  monkeypatch.setattr(workers, 'sys', None)
  stream.close()
