"""A sweep's results as a markdown table in the layout of the paper's Table 2."""

from __future__ import annotations

from typing import Sequence

from nonlocal_jax import console
from nonlocal_jax.sweep import statistics


def _pct(x) -> str:
  return '—' if x is None else f'{100 * x:.1f}'


def _duration(s) -> str:
  return '—' if s is None else console.format_duration(s)


def _count(n: int) -> str:
  return f'{n / 1e6:.2f}M' if n >= 1e6 else f'{n / 1e3:.1f}k'


def markdown_table(rows: Sequence[dict]) -> str:
  """``collect``'s rows as a markdown table in Table 2's layout (accuracies in %, multiply-adds per clip).

  With several seeds a variant's top-1 is the mean ± the sample standard deviation over its finished seeds, the
  'runs' column lists each seed's top-1 ('—' while unfinished), and top-5 and train time (a run's) are means. A
  multi-label sweep is judged by its mean average precision instead (video mAP, in the same layout), and its hit@1
  and hit@5 are not listed.
  """
  variants = statistics.summarize(rows)
  several = any(len(v['seeds']) > 1 for v in variants)
  # Tasks with 5 classes or fewer report no top-5 (it would always be 100 %): no column for it then.
  top5 = variants[0]['metric'] == 'top1' and (any(v['top5'] is not None for v in variants)
                                              or not any(v['status'] != 'missing' for v in variants))
  name = {'top1': 'top-1', 'map': 'mAP'}[variants[0]['metric']]
  top1_header = (f'{name} (mean ± sd) | runs (seeds ' + ', '.join(str(s) for s in variants[0]['seeds']) + ')'
                 if several else name)
  columns = [top1_header] + (['top-5'] if top5 else []) + ['params', 'multiply-adds',
                                                           'train time (a run)' if several else 'train time']
  lines = ['| model | ' + ' | '.join(columns) + ' |',
           '|---|' + '---:|' * (len(columns) + (1 if several else 0))]
  for v in variants:
    macs = f'{v["macs"] / 1e9:.2f}G' if v['macs'] >= 1e8 else f'{v["macs"] / 1e6:.1f}M'
    top1 = _pct(v['score'])
    if several:
      top1 += '' if v['score_std'] is None else f' ± {100 * v["score_std"]:.1f}'
      top1 += ' | ' + ' / '.join(_pct(x) for x in v['score_runs'])
    top5_cell = f' {_pct(v["top5"])} |' if top5 else ''
    lines.append(f'| {v["label"]} | {top1} |{top5_cell} {_count(v["params"])} | {macs} | '
                 f'{_duration(v["train_time_s"])} |')
  return '\n'.join(lines) + '\n'
