"""Per-variant statistics of a sweep's runs: the mean over seeds and the sample standard deviation of its score
(top-1, or the mean average precision of a multi-label task)."""

from __future__ import annotations

from typing import Optional, Sequence


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
  # None: a metric the run did not report (top-5 of a task with 5 classes or fewer).
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def score_metric(rows: Sequence[dict]) -> str:
  """The metric a sweep is judged by: 'map' when its finished runs report a mean average precision and no top-1
  (a multi-label task), else 'top1'."""
  done = [r for r in rows if r['status'] == 'finished']
  multi_label = done and all(r['top1'] is None for r in done) and any(r.get('map') is not None for r in done)
  return 'map' if multi_label else 'top1'


def summarize(rows: Sequence[dict]) -> list[dict]:
  """One row per variant from ``collect``'s per-run rows: the mean over its finished seeds of top-1, top-5,
  clip top-1, mAP and train time (None where no run reports it: top-5 of tasks with 5 classes or fewer, top-1 of
  multi-label tasks); the sweep's score (``metric``: 'top1', or 'map' for a multi-label sweep) as ``score`` (the
  mean), ``score_std`` (the sample standard deviation, None below 2 runs) and ``score_runs`` (every seed's, in seed
  order, None where unfinished); and ``status``: 'finished' (all seeds), 'partial' or 'missing'."""
  metric = score_metric(rows)
  groups: dict[str, list[dict]] = {}
  for r in rows:
    groups.setdefault(r['name'], []).append(r)
  out = []
  for name, runs in groups.items():
    done = [r for r in runs if r['status'] == 'finished']
    scores = [r[metric] for r in done]
    mean = _mean(scores)
    std = (sum((x - mean) ** 2 for x in scores) / (len(scores) - 1)) ** 0.5 if len(scores) > 1 else None
    times = [r['train_time_s'] for r in done if r['train_time_s'] is not None]
    out.append(dict(
        name=name, label=runs[0]['label'], params=runs[0]['params'], macs=runs[0]['macs'],
        status='finished' if len(done) == len(runs) else ('partial' if done else 'missing'),
        seeds=[r.get('seed') for r in runs], metric=metric, score=mean, score_std=std,
        score_runs=[r[metric] if r['status'] == 'finished' else None for r in runs],
        top1=_mean([r['top1'] for r in done]), top5=_mean([r['top5'] for r in done]),
        clip_top1=_mean([r['clip_top1'] for r in done]), map=_mean([r.get('map') for r in done]),
        train_time_s=_mean(times) if times else None))
  return out
