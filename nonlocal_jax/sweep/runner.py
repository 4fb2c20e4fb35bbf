"""Running a sweep: training its unfinished runs one after the other here, or printing one main.py command per
run for a scheduler."""

from __future__ import annotations

import os
import shlex
import time
from typing import Any, Callable, Optional, Sequence

from nonlocal_jax import training
from nonlocal_jax.sweep import report
from nonlocal_jax.sweep import results
from nonlocal_jax.sweep import variants


def format_flag(key: str, value: Any) -> str:
  """``--config.key=value`` as main.py parses it, for a dotted key of any depth; None cannot be written
  (ml_collections reads 'None' oddly)."""
  if value is None:
    raise variants.SweepError(f'config.{key}=None cannot be passed to main.py as a flag: use an equivalent value '
                              '(e.g. subsample (1, 1, 1) for none).')
  if isinstance(value, (tuple, list)):
    text = '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  else:
    text = str(value)
  return shlex.quote(f'--config.{key}={text}')


def commands(spec: str, workdir: str, *, extra: Optional[dict] = None, only_unfinished: bool = True,
             python: str = 'python', seeds: Optional[Sequence[int]] = None) -> list[str]:
  """One ``python main.py ...`` line per run of the sweep ``spec`` (finished ones left out by default).

  With ``seeds``, one line per variant and seed, every variant's first seed first.
  """
  lines = []
  for r in variants.resolve_runs(spec, workdir, extra, seeds):
    if only_unfinished and results.is_finished(r.config, r.workdir):
      continue
    flags = [format_flag(k, val) for k, val in {**r.variant.overrides, **(extra or {}), **r.seed_override}.items()]
    lines.append(' '.join([python, 'main.py', shlex.quote(f'--config={spec}'),
                           shlex.quote(f'--workdir={r.workdir}')] + flags))
  return lines


def run(spec: str, workdir: str, *, extra: Optional[dict] = None,
        train_fn: Optional[Callable[[Any, str], Any]] = None, log: Callable[[str], None] = print,
        seeds: Optional[Sequence[int]] = None) -> list[dict]:
  """Trains every unfinished run of ``spec`` (each variant, each seed), then writes and returns the results.

  ``train_fn(config, workdir)`` trains one run (default: ``training.train_and_evaluate``); ``log`` gets one line
  per run.
  """
  train_fn = train_fn or training.train_and_evaluate
  runs = variants.resolve_runs(spec, workdir, extra, seeds)  # Every override checked before any training.
  for i, r in enumerate(runs):
    what = os.path.basename(r.workdir)
    if results.is_finished(r.config, r.workdir):
      log(f'[{i + 1}/{len(runs)}] {what}: finished, skipped.')
      continue
    log(f'[{i + 1}/{len(runs)}] {what}: training in {r.workdir}.')
    start = time.time()
    train_fn(r.config, r.workdir)
    results.add_train_time(r.workdir, time.time() - start)
  return report.write_results(results.collect(spec, workdir, extra=extra, seeds=seeds), workdir)
