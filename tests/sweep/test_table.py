"""The markdown table: Table 2's columns, with sizes and times in readable units."""

from nonlocal_jax import sweep


def test_one_seed_table_in_readable_units():
  rows = [dict(name='r50', label='R50 NL', seed=0, status='finished', top1=0.7734, top5=0.9312, clip_top1=0.6,
               params=35_300_000, macs=32_100_000_000, train_time_s=2 * 3600 + 5 * 60),
          dict(name='tiny', label='tiny', seed=0, status='missing', top1=None, top5=None, clip_top1=None,
               params=33_254, macs=250_000, train_time_s=None)]
  lines = sweep.markdown_table(rows).splitlines()
  assert lines[0] == '| model | top-1 | top-5 | params | multiply-adds | train time |'
  assert lines[2] == '| R50 NL | 77.3 | 93.1 | 35.30M | 32.10G | 2h05m |'
  assert lines[3] == '| tiny | — | — | 33.3k | 0.2M | — |'


def test_no_top5_column_when_no_run_reports_one():
  # Tasks with 5 classes or fewer report no top-5: it would always be 100 %.
  rows = [dict(name='c2d', label='C2D', seed=s, status='finished', top1=t, top5=None, clip_top1=t, params=1000,
               macs=2_000_000, train_time_s=60.0) for s, t in ((0, 0.5), (1, 0.7))]
  lines = sweep.markdown_table(rows).splitlines()
  assert lines[0] == '| model | top-1 (mean ± sd) | runs (seeds 0, 1) | params | multiply-adds | train time (a run) |'
  assert lines[1] == '|---|---:|---:|---:|---:|---:|'
  # mean 60.0, sample sd of (50, 70) = 14.1
  assert lines[2] == '| C2D | 60.0 ± 14.1 | 50.0 / 70.0 | 1.0k | 2.0M | 1m00s |'
