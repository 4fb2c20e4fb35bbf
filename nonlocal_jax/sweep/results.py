"""What each run of a sweep left in its directory, gathered as one row per run: finished or not, its test
accuracies, its training time, and its model's size and cost."""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from nonlocal_jax import paths
from nonlocal_jax.models import build_model, summary
from nonlocal_jax.sweep import variants

TIME_FILE = 'sweep_time.json'  # In each run's directory: its training time, summed over restarts.
# A row of collect() (and a column of results.csv), in order.
CSV_COLUMNS = ('name', 'label', 'seed', 'status', 'top1', 'top5', 'clip_top1', 'map', 'params', 'macs',
               'train_time_s', 'overrides', 'workdir')  # map: video mAP of multi-label runs (top1 stays empty).


def metrics_path(config, workdir: str) -> str:
  """Where train_and_evaluate writes the final test metrics of ``config`` in ``workdir``."""
  return os.path.join(workdir, 'eval', f'test_step{config.train.num_steps}_metrics.json')


def is_finished(config, workdir: str) -> bool:
  """Whether the run of ``config`` in ``workdir`` has its final test metrics."""
  return paths.as_path(metrics_path(config, workdir)).is_file()


def add_train_time(workdir: str, seconds: float) -> None:
  """Adds ``seconds`` of training to the run's ``sweep_time.json``."""
  # Summed over restarts, so a resumed variant reports its whole training time (the lost part of an
  # interrupted segment excepted).
  path = paths.as_path(workdir) / TIME_FILE
  total = _read_json(path).get('train_time_s', 0.0) if path.is_file() else 0.0
  path.write_text(json.dumps({'train_time_s': total + seconds}))


def _read_json(path: paths.PathLike) -> dict:
  return json.loads(paths.as_path(path).read_text())


def _train_time(config, workdir: str) -> Optional[float]:
  path = paths.as_path(workdir) / TIME_FILE
  if path.is_file():
    return float(_read_json(path)['train_time_s'])
  # Runs started by --print_commands: from the config written at (re)start to the test metrics.
  start = paths.as_path(workdir) / 'config.json'
  if start.is_file():
    return max(0.0, paths.mtime(metrics_path(config, workdir)) - paths.mtime(start))
  return None


def model_cost(config) -> tuple[int, int]:
  """(parameters, multiply-adds per clip at the training clip size) of ``config.model``."""
  model = build_model(config.model)
  result = summary.analyse(model, summary.default_input_shape(model, config.data))
  return result.params, result.macs


def collect(spec: str, workdir: str, *, extra: Optional[dict] = None,
            seeds: Optional[Sequence[int]] = None) -> list[dict]:
  """One row per run of ``spec`` (CSV_COLUMNS), variant by variant, each variant's seeds together; unfinished
  runs have status 'missing' and no metrics."""
  runs = variants.resolve_runs(spec, workdir, extra, seeds)
  order = {name: i for i, name in enumerate(dict.fromkeys(r.variant.name for r in runs))}
  cost = {}
  rows = []
  for r in sorted(runs, key=lambda r: order[r.variant.name]):  # Stable: seeds keep their order.
    if r.variant.name not in cost:  # The seed changes no weight shape.
      cost[r.variant.name] = model_cost(r.config)
    params, macs = cost[r.variant.name]
    row = dict(name=r.variant.name, label=r.variant.label, seed=r.seed, status='missing', top1=None, top5=None,
               clip_top1=None, map=None, params=params, macs=macs, train_time_s=None,
               overrides=json.dumps(r.variant.overrides, sort_keys=True), workdir=r.workdir)
    if is_finished(r.config, r.workdir):
      m = _read_json(metrics_path(r.config, r.workdir))
      row.update(status='finished', top1=m.get('video_top1'), top5=m.get('video_top5'),
                 clip_top1=m.get('clip_top1'), map=m.get('video_map'), train_time_s=_train_time(r.config, r.workdir))
    rows.append(row)
  return rows
