"""A sweep's result files (results.csv, results.md, results.png) and what the console says about them."""

from __future__ import annotations

import csv
import io
import os
from typing import Sequence

from nonlocal_jax import paths
from nonlocal_jax.sweep import chart
from nonlocal_jax.sweep import results
from nonlocal_jax.sweep import table


def _has_finished(rows: Sequence[dict]) -> bool:
  return any(r['status'] == 'finished' for r in rows)


def write_results(rows: Sequence[dict], workdir: str, title: str = '') -> list[dict]:
  """Writes ``results.csv`` (one row per run), ``results.md`` and ``results.png`` (one per variant) into ``workdir``
  (local or gs://); returns the rows.

  With no run finished there is nothing to draw: no ``results.png`` is written (and an older one is removed, so
  that the files agree); the csv and the table still list every run and its directory.
  """
  directory = paths.as_path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  text = io.StringIO(newline='')  # The bytes open(..., newline='') wrote; epath's open takes no newline=''.
  writer = csv.DictWriter(text, fieldnames=results.CSV_COLUMNS)
  writer.writeheader()
  writer.writerows({k: ('' if r[k] is None else r[k]) for k in results.CSV_COLUMNS} for r in rows)
  (directory / 'results.csv').write_bytes(text.getvalue().encode('utf-8'))
  (directory / 'results.md').write_text(table.markdown_table(rows))
  if _has_finished(rows):
    chart.plot(rows, directory / 'results.png', title or os.path.basename(os.path.normpath(workdir)))
  elif (directory / 'results.png').exists():
    (directory / 'results.png').unlink()
  return list(rows)


def progress(rows: Sequence[dict]) -> str:
  """'K of N runs finished.', naming the runs (their directories' names) that are not."""
  missing = [os.path.basename(os.path.normpath(r['workdir'])) for r in rows if r['status'] != 'finished']
  line = f'{len(rows) - len(missing)} of {len(rows)} runs finished'
  return line + (f'; missing: {", ".join(missing)}.' if missing else '.')


def describe(rows: Sequence[dict], workdir: str) -> str:
  """What the command line prints after a sweep: the markdown table, how many runs finished and the files."""
  files = 'results.md, results.png' if _has_finished(rows) else 'results.md (no chart: no run has finished)'
  return (table.markdown_table(rows) + progress(rows) + '\n'
          + f'Results: {os.path.join(workdir, "results.csv")}, {files}\n')
