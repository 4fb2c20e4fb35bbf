r"""Sweeps: train every variant of a config's sweep, then tabulate and plot the results (the paper's Table 2).

    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py --workdir=gs://b/t2a --print_commands
    python -m nonlocal_jax.sweep --config=configs/ablation_pairwise.py:synthetic --workdir=/tmp/table2a --collect_only

A sweep config is an ordinary config module (``get_config(arg)``, which main.py reads) that also defines
``get_sweep(arg)``: a list of variants, each a dict of dotted overrides of the config plus an optional ``name``
(its sub-workdir, letters, digits, ``-_.=,``) and ``label`` (its row in the table)::

    def get_sweep(arg=None):
      return [{'name': 'c2d', 'label': 'C2D baseline', 'model.nonlocal_locations': 'none'},
              {'name': 'dot_product', 'model.nonlocal_pairwise': 'dot_product'}]

``product(a, b)`` crosses two such lists (big_vision's ``hyper.product``). The sweep lives beside the config
rather than in it so that every variant's saved ``config.json`` is exactly what main.py would train.

Each variant trains in ``<workdir>/<name>`` with ``nonlocal_jax.train.train_and_evaluate`` (in this process,
one after the other). A variant whose test metrics (``eval/test_step<num_steps>_metrics.json``) exist is
finished and skipped, and an unfinished one resumes from its checkpoint, so rerunning a stopped sweep
continues it. ``--print_commands`` prints one ``python main.py`` line per unfinished variant instead, for a
cluster scheduler; ``--collect_only`` then gathers their results. Results: ``<workdir>/results.csv`` (every
column), ``results.md`` (model, top-1, top-5, params, multiply-adds, train time: Table 2's layout) and
``results.png`` (top-1/top-5 bars). Top-1/top-5 are the video-level (multi-view) test accuracies;
multiply-adds are ``nonlocal_jax.models.summary``'s count per clip at the training clip size.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import os
import re
import shlex
import sys
import time
from typing import Any, Callable, Optional, Sequence

from nonlocal_jax import config_files
from nonlocal_jax import paths

_NAME = re.compile(r'[A-Za-z0-9_.=,-]+')
_TIME_FILE = 'sweep_time.json'
CSV_COLUMNS = ('name', 'label', 'status', 'top1', 'top5', 'clip_top1', 'params', 'macs', 'train_time_s',
               'overrides', 'workdir')


class SweepError(ValueError):
  """A sweep config or its variants cannot work; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Variant:
  """One run of a sweep: its sub-workdir name, its table label and its dotted config overrides."""
  name: str
  label: str
  overrides: dict


def product(*axes: Sequence[dict]) -> list[dict]:
  """All combinations of one dict from each axis, merged (later axes vary fastest); names joined with ','."""
  variants = []
  for combo in itertools.product(*axes):
    merged = {}
    for part in combo:
      merged.update({k: v for k, v in part.items() if k not in ('name', 'label')})
    names = [p['name'] for p in combo if 'name' in p]
    labels = [p.get('label', p.get('name')) for p in combo if 'label' in p or 'name' in p]
    if names:
      merged['name'] = ','.join(names)
    if labels:
      merged['label'] = ', '.join(labels)
    variants.append(merged)
  return variants


def _default_name(overrides: dict) -> str:
  return ','.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in overrides.items()) or 'base'


def split_spec(spec: str) -> tuple[str, Optional[str]]:
  """'configs/x.py:synthetic' -> ('configs/x.py', 'synthetic'); ('configs/x.py', None) without an argument."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def load_module(path: str):
  """The config module at ``path`` (a file, as main.py's --config reads it)."""
  if not os.path.isfile(path):
    raise SweepError(f'The sweep config {path} does not exist: pass --config=configs/<name>.py[:arg].')
  return config_files.load_module(path, prefix='sweep_config_')


def load_variants(module, arg: Optional[str] = None) -> list[Variant]:
  """The module's ``get_sweep(arg)`` as Variants, with names checked to be usable and unique directory names."""
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'{module.__file__} defines no get_sweep(arg): add one returning a list of override dicts.')
  variants, seen = [], set()
  for raw in module.get_sweep(arg):
    raw = dict(raw)
    name, label = raw.pop('name', None), raw.pop('label', None)
    name = name or _default_name(raw)
    if not _NAME.fullmatch(name) or name in seen:
      raise SweepError(f'Sweep variant name {name!r} is not a unique directory name of letters, digits and '
                       '"-_.=,": give each variant a distinct "name".')
    seen.add(name)
    variants.append(Variant(name, label or name, raw))
  if not variants:
    raise SweepError(f'{module.__file__}: get_sweep returned no variants.')
  return variants


def variant_config(base, variant: Variant, extra: Optional[dict] = None):
  """A locked copy of ``base`` with the variant's overrides (then ``extra``) applied; unknown fields fail."""
  config = base.copy_and_resolve_references()
  config.lock()
  for source in (variant.overrides, extra or {}):
    for key, value in source.items():
      try:
        config.update_from_flattened_dict({key: value})
      except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SweepError(f'Variant {variant.name!r}: cannot set config.{key}={value!r} ({_one_line(e)}); fix the '
                         'sweep or the override.') from None
  if not config.train.eval_at_end:
    raise SweepError(f'Variant {variant.name!r} has train.eval_at_end=False: a sweep needs each run\'s test '
                     'metrics, so leave it True.')
  return config


def _one_line(e: Exception) -> str:
  text = str(e).split('\n')[0].strip('\'" ')
  return text[:200]


def metrics_path(config, workdir: str) -> str:
  """Where train_and_evaluate writes the final test metrics of ``config`` in ``workdir``."""
  return os.path.join(workdir, 'eval', f'test_step{config.train.num_steps}_metrics.json')


def is_finished(config, workdir: str) -> bool:
  """Whether the run of ``config`` in ``workdir`` has its final test metrics."""
  return paths.as_path(metrics_path(config, workdir)).is_file()


def format_flag(key: str, value: Any) -> str:
  """``--config.key=value`` as main.py parses it; None cannot be written (ml_collections reads 'None' oddly)."""
  if value is None:
    raise SweepError(f'config.{key}=None cannot be passed to main.py as a flag: use an equivalent value '
                     '(e.g. subsample (1, 1, 1) for none).')
  if isinstance(value, (tuple, list)):
    text = '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  else:
    text = str(value)
  return shlex.quote(f'--config.{key}={text}')


def _resolved_variants(spec: str, workdir: str, extra: Optional[dict]) -> list[tuple[Any, Any, str]]:
  """(variant, its config, its sub-workdir) for every variant of ``spec``, all configs built up front."""
  path, arg = split_spec(spec)
  module = load_module(path)
  base = module.get_config(arg)
  return [(v, variant_config(base, v, extra), os.path.join(workdir, v.name)) for v in load_variants(module, arg)]


def commands(spec: str, workdir: str, *, extra: Optional[dict] = None, only_unfinished: bool = True,
             python: str = 'python') -> list[str]:
  """One ``python main.py ...`` line per variant of the sweep ``spec`` (finished ones left out by default)."""
  lines = []
  for v, config, sub in _resolved_variants(spec, workdir, extra):
    if only_unfinished and is_finished(config, sub):
      continue
    flags = [format_flag(k, val) for k, val in {**v.overrides, **(extra or {})}.items()]
    lines.append(' '.join([python, 'main.py', shlex.quote(f'--config={spec}'), shlex.quote(f'--workdir={sub}')]
                          + flags))
  return lines


def run(spec: str, workdir: str, *, extra: Optional[dict] = None,
        train_fn: Optional[Callable[[Any, str], Any]] = None, log: Callable[[str], None] = print) -> list[dict]:
  """Trains every unfinished variant of ``spec`` in ``workdir/<name>``, then writes and returns the results."""
  if train_fn is None:
    from nonlocal_jax import train  # pylint: disable=g-import-not-at-top
    train_fn = train.train_and_evaluate
  variants = _resolved_variants(spec, workdir, extra)  # Every override checked before any training.
  for i, (v, config, sub) in enumerate(variants):
    if is_finished(config, sub):
      log(f'[{i + 1}/{len(variants)}] {v.name}: finished, skipped.')
      continue
    log(f'[{i + 1}/{len(variants)}] {v.name}: training in {sub}.')
    start = time.time()
    train_fn(config, sub)
    _add_time(sub, time.time() - start)
  return write_results(collect(spec, workdir, extra=extra), workdir)


def _add_time(workdir: str, seconds: float) -> None:
  # Summed over restarts, so a resumed variant reports its whole training time (the lost part of an
  # interrupted segment excepted).
  path = paths.as_path(workdir) / _TIME_FILE
  total = _read_json(path).get('train_time_s', 0.0) if path.is_file() else 0.0
  path.write_text(json.dumps({'train_time_s': total + seconds}))


def _read_json(path: paths.PathLike) -> dict:
  return json.loads(paths.as_path(path).read_text())


def _train_time(config, workdir: str) -> Optional[float]:
  path = paths.as_path(workdir) / _TIME_FILE
  if path.is_file():
    return float(_read_json(path)['train_time_s'])
  # Runs started by --print_commands: from the config written at (re)start to the test metrics.
  start = paths.as_path(workdir) / 'config.json'
  if start.is_file():
    return max(0.0, paths.mtime(metrics_path(config, workdir)) - paths.mtime(start))
  return None


def model_cost(config) -> tuple[int, int]:
  """(parameters, multiply-adds per clip at the training clip size) of ``config.model``."""
  from nonlocal_jax.models import build_model, summary  # pylint: disable=g-import-not-at-top
  model = build_model(config.model)
  result = summary.analyse(model, summary.default_input_shape(model, config.data))
  return result.params, result.macs


def collect(spec: str, workdir: str, *, extra: Optional[dict] = None) -> list[dict]:
  """One row per variant of ``spec`` (CSV_COLUMNS); unfinished variants have status 'missing' and no metrics."""
  rows = []
  for v, config, sub in _resolved_variants(spec, workdir, extra):
    params, macs = model_cost(config)
    row = dict(name=v.name, label=v.label, status='missing', top1=None, top5=None, clip_top1=None, params=params,
               macs=macs, train_time_s=None, overrides=json.dumps(v.overrides, sort_keys=True), workdir=sub)
    if is_finished(config, sub):
      m = _read_json(metrics_path(config, sub))
      row.update(status='finished', top1=m['video_top1'], top5=m['video_top5'], clip_top1=m['clip_top1'],
                 train_time_s=_train_time(config, sub))
    rows.append(row)
  return rows


def _pct(x) -> str:
  return '—' if x is None else f'{100 * x:.1f}'


def _duration(s) -> str:
  if s is None:
    return '—'
  s = int(round(s))
  return f'{s // 3600}h{s // 60 % 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def _count(n: int) -> str:
  return f'{n / 1e6:.2f}M' if n >= 1e6 else f'{n / 1e3:.1f}k'


def markdown_table(rows: Sequence[dict]) -> str:
  """The rows as a markdown table in Table 2's layout (accuracies in %, multiply-adds in G per clip)."""
  lines = ['| model | top-1 | top-5 | params | multiply-adds | train time |', '|---|---:|---:|---:|---:|---:|']
  for r in rows:
    macs = f'{r["macs"] / 1e9:.2f}G' if r['macs'] >= 1e8 else f'{r["macs"] / 1e6:.1f}M'
    lines.append(f'| {r["label"]} | {_pct(r["top1"])} | {_pct(r["top5"])} | {_count(r["params"])} | {macs} | '
                 f'{_duration(r["train_time_s"])} |')
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[dict], path: paths.PathLike, title: str = '') -> None:
  """Top-1 and top-5 bars per variant (unfinished variants left empty), saved as a PNG (local or gs://)."""
  # Figure + Agg canvas rather than pyplot: no global backend switch, no figure left open in notebooks.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  n = len(rows)
  fig = Figure(figsize=(max(5.0, 1.2 * n + 2.0), 4.0))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x = np.arange(n)
  for offset, key, name in ((-0.2, 'top1', 'top-1'), (0.2, 'top5', 'top-5')):
    values = [100 * r[key] if r[key] is not None else 0.0 for r in rows]
    bars = ax.bar(x + offset, values, width=0.4, label=name)
    for bar, r in zip(bars, rows):
      if r[key] is not None:
        ax.annotate(f'{100 * r[key]:.1f}', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha='center', va='bottom', fontsize=7)
  ax.set_xticks(x, [r['label'] for r in rows], rotation=20, ha='right', fontsize=8)
  ax.set_ylabel('test accuracy (%)')
  ax.set_ylim(0, 105)
  ax.legend(loc='lower right')
  ax.set_title(title)
  fig.tight_layout()
  image = io.BytesIO()  # matplotlib writes local files only; epath writes the bytes anywhere.
  fig.savefig(image, format='png', dpi=100)
  paths.as_path(path).write_bytes(image.getvalue())


def write_results(rows: Sequence[dict], workdir: str, title: str = '') -> list[dict]:
  """Writes ``results.csv``, ``results.md`` and ``results.png`` into ``workdir`` (local or gs://); returns the rows."""
  directory = paths.as_path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  table = io.StringIO(newline='')  # The bytes open(..., newline='') wrote; epath's open takes no newline=''.
  writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS)
  writer.writeheader()
  writer.writerows({k: ('' if r[k] is None else r[k]) for k in CSV_COLUMNS} for r in rows)
  (directory / 'results.csv').write_bytes(table.getvalue().encode('utf-8'))
  (directory / 'results.md').write_text(markdown_table(rows))
  plot(rows, directory / 'results.png', title or os.path.basename(os.path.normpath(workdir)))
  return list(rows)


def parse_overrides(items: Sequence[str]) -> dict:
  """['data.data_dir=/x', 'train.num_steps=2'] -> {'data.data_dir': '/x', 'train.num_steps': 2} (literals parsed)."""
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for item in items or ():
    key, sep, text = item.partition('=')
    if not sep or not key:
      raise SweepError(f'--set {item!r} is not key=value (e.g. --set=train.num_steps=100).')
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def main(argv: Sequence[str]) -> None:
  """Runs, prints or collects the sweep of --config in --workdir."""
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  extra = parse_overrides(f.set)
  if f.print_commands:
    print('\n'.join(commands(f.config, f.workdir, extra=extra, only_unfinished=not f.all_commands)))
    return
  if f.collect_only:
    rows = write_results(collect(f.config, f.workdir, extra=extra), f.workdir)
  else:
    rows = run(f.config, f.workdir, extra=extra)
  print(markdown_table(rows), end='')
  print(f'Results: {os.path.join(f.workdir, "results.csv")}, results.md, results.png')


def _define_flags_and_run() -> None:
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('config', None, 'Sweep config file with an optional argument '
                      '(configs/ablation_pairwise.py:synthetic).')
  flags.DEFINE_string('workdir', None, 'Directory of the sweep: one sub-directory per variant, and the results.')
  flags.DEFINE_bool('print_commands', False, 'Print one main.py command per unfinished variant; train nothing.')
  flags.DEFINE_bool('all_commands', False, 'With --print_commands, also print the finished variants.')
  flags.DEFINE_bool('collect_only', False, 'Only gather the finished variants\' results; train nothing.')
  flags.DEFINE_multi_string('set', [], 'key=value override applied to every variant (data.data_dir=/x).')
  flags.mark_flags_as_required(['config', 'workdir'])

  def run_main(argv):
    logging.set_verbosity(logging.INFO)
    from nonlocal_jax import train  # pylint: disable=g-import-not-at-top
    try:
      main(argv)
    except (SweepError, train.ConfigError, train.NonFiniteLossError) as e:
      sys.exit(f'Error: {e}')
  app.run(run_main)


if __name__ == '__main__':
  _define_flags_and_run()
