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
