"""Per-variant statistics: the mean and sample standard deviation over finished seeds, and the status."""

import pytest

from nonlocal_jax import sweep


def _row(name, seed, top1, status='finished'):
  return dict(name=name, label=name.upper(), seed=seed, status=status, top1=top1, top5=None if top1 is None else 1.0,
              clip_top1=top1, params=10, macs=20, train_time_s=None if top1 is None else 60.0 * (seed + 1))


def test_summary_over_seeds():
  rows = [_row('a', 0, 0.5), _row('a', 1, 0.6), _row('a', 2, 0.7), _row('b', 0, 0.9), _row('b', 1, None, 'missing'),
          _row('c', 0, None, 'missing')]
  a, b, c = sweep.summarize(rows)
  assert a['status'] == 'finished' and a['seeds'] == [0, 1, 2] and a['label'] == 'A'
  assert a['top1'] == pytest.approx(0.6) and a['top1_std'] == pytest.approx(0.1) and a['train_time_s'] == 120.0
  assert b['status'] == 'partial' and b['top1'] == 0.9 and b['top1_std'] is None and b['top1_runs'] == [0.9, None]
  assert c['status'] == 'missing' and c['top1'] is None and c['top5'] is None and c['train_time_s'] is None
