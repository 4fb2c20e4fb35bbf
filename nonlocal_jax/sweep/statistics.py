"""Per-variant statistics of a sweep's runs: the mean over seeds and the sample standard deviation of top-1."""

from __future__ import annotations

from typing import Optional, Sequence


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
  # None: a metric the run did not report (top-5 of a task with 5 classes or fewer).
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def summarize(rows: Sequence[dict]) -> list[dict]:
  """One row per variant from ``collect``'s per-run rows: the mean over its finished seeds of top-1, top-5,
  clip top-1 and train time (None where no run reports it: top-5 of tasks with 5 classes or fewer), the sample
  standard deviation of top-1 (``top1_std``, None below 2 runs), every
  seed's top-1 in seed order (``top1_runs``, None where unfinished) and ``status``: 'finished' (all seeds),
  'partial' or 'missing'."""
  groups: dict[str, list[dict]] = {}
  for r in rows:
    groups.setdefault(r['name'], []).append(r)
  out = []
  for name, runs in groups.items():
    done = [r for r in runs if r['status'] == 'finished']
    top1 = [r['top1'] for r in done]
    mean = _mean(top1)
    std = (sum((x - mean) ** 2 for x in top1) / (len(top1) - 1)) ** 0.5 if len(top1) > 1 else None
    times = [r['train_time_s'] for r in done if r['train_time_s'] is not None]
    out.append(dict(
        name=name, label=runs[0]['label'], params=runs[0]['params'], macs=runs[0]['macs'],
        status='finished' if len(done) == len(runs) else ('partial' if done else 'missing'),
        seeds=[r.get('seed') for r in runs], top1=mean, top1_std=std,
        top1_runs=[r['top1'] if r['status'] == 'finished' else None for r in runs],
        top5=_mean([r['top5'] for r in done]), clip_top1=_mean([r['clip_top1'] for r in done]),
        train_time_s=_mean(times) if times else None))
  return out
