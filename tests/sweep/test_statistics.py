"""Per-variant statistics: the mean and sample standard deviation over finished seeds, and the status."""

import pytest

from nonlocal_jax import sweep


def _row(name, seed, top1, status='finished', map_=None):
  return dict(name=name, label=name.upper(), seed=seed, status=status, top1=top1, top5=None if top1 is None else 1.0,
              clip_top1=top1, map=map_, params=10, macs=20,
              train_time_s=None if status != 'finished' else 60.0 * (seed + 1))


def test_summary_over_seeds():
  rows = [_row('a', 0, 0.5), _row('a', 1, 0.6), _row('a', 2, 0.7), _row('b', 0, 0.9), _row('b', 1, None, 'missing'),
          _row('c', 0, None, 'missing')]
  a, b, c = sweep.summarize(rows)
  assert a['status'] == 'finished' and a['seeds'] == [0, 1, 2] and a['label'] == 'A'
  assert a['metric'] == 'top1' and a['score'] == pytest.approx(0.6) and a['top1'] == pytest.approx(0.6)
  assert a['score_std'] == pytest.approx(0.1) and a['train_time_s'] == 120.0
  assert b['status'] == 'partial' and b['score'] == 0.9 and b['score_std'] is None and b['score_runs'] == [0.9, None]
  assert c['status'] == 'missing' and c['top1'] is None and c['top5'] is None and c['train_time_s'] is None


def test_a_multi_label_sweep_is_scored_by_map():
  # Multi-label runs report mAP and no top-1: mean (0.5 + 0.8) / 2 = 0.65, sd |0.8 - 0.5| / sqrt(2) ≈ 0.2121.
  rows = [_row('c2d', 0, None, map_=0.5), _row('c2d', 1, None, map_=0.8), _row('nl', 0, None, map_=0.7),
          _row('nl', 1, None, 'missing')]
  c2d, nl = sweep.summarize(rows)
  assert c2d['metric'] == nl['metric'] == 'map' and c2d['top1'] is None
  assert c2d['score'] == pytest.approx(0.65) and c2d['map'] == pytest.approx(0.65)
  assert c2d['score_std'] == pytest.approx(0.3 / 2**0.5)
  assert nl['score'] == 0.7 and nl['score_std'] is None and nl['score_runs'] == [0.7, None]
  table = sweep.markdown_table(rows)
  assert '| model | mAP (mean ± sd) | runs (seeds 0, 1) |' in table and 'top-5' not in table
  assert '| C2D | 65.0 ± 21.2 | 50.0 / 80.0 |' in table
