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

Each variant trains in ``<workdir>/<name>`` with ``nonlocal_jax.training.train_and_evaluate`` (in this process,
one after the other). A variant whose test metrics (``eval/test_step<num_steps>_metrics.json``) exist is
finished and skipped, and an unfinished one resumes from its checkpoint, so rerunning a stopped sweep
continues it. ``--print_commands`` prints one ``python main.py`` line per unfinished variant instead, for a
cluster scheduler; ``--collect_only`` then gathers their results. Results: ``<workdir>/results.csv`` (every
column), ``results.md`` (model, top-1, top-5, params, multiply-adds, train time: Table 2's layout) and
``results.png`` (top-1/top-5 bars). Top-1/top-5 are the video-level (multi-view) test accuracies;
multiply-adds are ``nonlocal_jax.models.summary``'s count per clip at the training clip size.

``--seeds=0,1,2`` trains every variant once per seed (``config.seed``: initialisation, data order, dropout):
the config's own seed in ``<name>``, so a finished one-seed sweep is reused, the others in ``<name>_seed<k>``;
commands come seed by seed, so a scheduler finishes a whole one-seed table first. ``results.csv`` then has one
row per run, and ``results.md``/``results.png`` give each variant's mean ± standard deviation and every seed's
top-1::

    python -m nonlocal_jax.sweep --config=configs/ablation_stage.py:synthetic --workdir=/tmp/table2b --seeds=0,1,2
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
CSV_COLUMNS = ('name', 'label', 'seed', 'status', 'top1', 'top5', 'clip_top1', 'params', 'macs', 'train_time_s',
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


def check_seeds(seeds: Optional[Sequence[Any]]) -> Optional[tuple[int, ...]]:
  """``seeds`` as distinct ints (None or empty: the config's own seed only); anything else fails in one sentence."""
  if not seeds:
    return None
  try:
    out = tuple(int(str(s).strip()) for s in seeds)
  except ValueError:
    raise SweepError(f'--seeds takes integers separated by commas (e.g. --seeds=0,1,2), got {list(seeds)!r}.'
                     ) from None
  if len(set(out)) != len(out):
    raise SweepError(f'--seeds lists a seed twice ({list(out)}): give each seed once.')
  return out


def run_dir(workdir: str, name: str, seed: int, base_seed: int) -> str:
  """A run's directory: ``<workdir>/<name>`` for the config's own seed, ``<workdir>/<name>_seed<k>`` otherwise.

  So a one-seed sweep's runs are the first seed of the same sweep with more seeds, and nothing is retrained.
  """
  return os.path.join(workdir, name if seed == base_seed else f'{name}_seed{seed}')


@dataclasses.dataclass(frozen=True)
class _Run:
  variant: Variant
  config: Any
  workdir: str
  seed: int
  seed_override: dict  # {'seed': k} where k is not the config's own seed, else {}.


def _resolved_runs(spec: str, workdir: str, extra: Optional[dict],
                   seeds: Optional[Sequence[int]] = None) -> list[_Run]:
  """Every run of ``spec`` (variants × seeds, seed-major), all configs built up front so bad overrides fail first."""
  path, arg = split_spec(spec)
  module = load_module(path)
  base = module.get_config(arg)
  variants = [(v, variant_config(base, v, extra)) for v in load_variants(module, arg)]
  seeds = check_seeds(seeds)
  runs = []
  for seed in seeds or (None,):
    for v, config in variants:
      base_seed = int(config.seed)
      if seed is None or seed == base_seed:
        runs.append(_Run(v, config, run_dir(workdir, v.name, base_seed, base_seed), base_seed, {}))
      else:
        config = variant_config(base, v, {**(extra or {}), 'seed': seed})
        runs.append(_Run(v, config, run_dir(workdir, v.name, seed, base_seed), seed, {'seed': seed}))
  return runs


def commands(spec: str, workdir: str, *, extra: Optional[dict] = None, only_unfinished: bool = True,
             python: str = 'python', seeds: Optional[Sequence[int]] = None) -> list[str]:
  """One ``python main.py ...`` line per run of the sweep ``spec`` (finished ones left out by default).

  With ``seeds``, one line per variant and seed, every variant's first seed first.
  """
  lines = []
  for r in _resolved_runs(spec, workdir, extra, seeds):
    if only_unfinished and is_finished(r.config, r.workdir):
      continue
    flags = [format_flag(k, val) for k, val in {**r.variant.overrides, **(extra or {}), **r.seed_override}.items()]
    lines.append(' '.join([python, 'main.py', shlex.quote(f'--config={spec}'),
                           shlex.quote(f'--workdir={r.workdir}')] + flags))
  return lines


def run(spec: str, workdir: str, *, extra: Optional[dict] = None,
        train_fn: Optional[Callable[[Any, str], Any]] = None, log: Callable[[str], None] = print,
        seeds: Optional[Sequence[int]] = None) -> list[dict]:
  """Trains every unfinished run of ``spec`` (each variant, each seed), then writes and returns the results."""
  if train_fn is None:
    from nonlocal_jax import training  # pylint: disable=g-import-not-at-top
    train_fn = training.train_and_evaluate
  runs = _resolved_runs(spec, workdir, extra, seeds)  # Every override checked before any training.
  for i, r in enumerate(runs):
    what = os.path.basename(r.workdir)
    if is_finished(r.config, r.workdir):
      log(f'[{i + 1}/{len(runs)}] {what}: finished, skipped.')
      continue
    log(f'[{i + 1}/{len(runs)}] {what}: training in {r.workdir}.')
    start = time.time()
    train_fn(r.config, r.workdir)
    _add_time(r.workdir, time.time() - start)
  return write_results(collect(spec, workdir, extra=extra, seeds=seeds), workdir)


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


def collect(spec: str, workdir: str, *, extra: Optional[dict] = None,
            seeds: Optional[Sequence[int]] = None) -> list[dict]:
  """One row per run of ``spec`` (CSV_COLUMNS), variant by variant, each variant's seeds together; unfinished
  runs have status 'missing' and no metrics."""
  runs = _resolved_runs(spec, workdir, extra, seeds)
  order = {name: i for i, name in enumerate(dict.fromkeys(r.variant.name for r in runs))}
  cost = {}
  rows = []
  for r in sorted(runs, key=lambda r: order[r.variant.name]):  # Stable: seeds keep their order.
    if r.variant.name not in cost:  # The seed changes no weight shape.
      cost[r.variant.name] = model_cost(r.config)
    params, macs = cost[r.variant.name]
    row = dict(name=r.variant.name, label=r.variant.label, seed=r.seed, status='missing', top1=None, top5=None,
               clip_top1=None, params=params, macs=macs, train_time_s=None,
               overrides=json.dumps(r.variant.overrides, sort_keys=True), workdir=r.workdir)
    if is_finished(r.config, r.workdir):
      m = _read_json(metrics_path(r.config, r.workdir))
      row.update(status='finished', top1=m['video_top1'], top5=m['video_top5'], clip_top1=m['clip_top1'],
                 train_time_s=_train_time(r.config, r.workdir))
    rows.append(row)
  return rows


def _mean(values: Sequence[float]) -> Optional[float]:
  return sum(values) / len(values) if values else None


def summarize(rows: Sequence[dict]) -> list[dict]:
  """One row per variant from ``collect``'s per-run rows: the mean over its finished seeds of top-1, top-5,
  clip top-1 and train time, the sample standard deviation of top-1 (``top1_std``, None below 2 runs), every
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
  """``collect``'s rows as a markdown table in Table 2's layout (accuracies in %, multiply-adds per clip).

  With several seeds a variant's top-1 is the mean ± the sample standard deviation over its finished seeds, the
  'runs' column lists each seed's top-1 ('—' while unfinished), and top-5 and train time (a run's) are means.
  """
  variants = summarize(rows)
  several = any(len(v['seeds']) > 1 for v in variants)
  if several:
    lines = ['| model | top-1 (mean ± sd) | runs (seeds ' + ', '.join(str(s) for s in variants[0]['seeds'])
             + ') | top-5 | params | multiply-adds | train time (a run) |', '|---|---:|---:|---:|---:|---:|---:|']
  else:
    lines = ['| model | top-1 | top-5 | params | multiply-adds | train time |', '|---|---:|---:|---:|---:|---:|']
  for v in variants:
    macs = f'{v["macs"] / 1e9:.2f}G' if v['macs'] >= 1e8 else f'{v["macs"] / 1e6:.1f}M'
    top1 = _pct(v['top1'])
    if several:
      top1 += '' if v['top1_std'] is None else f' ± {100 * v["top1_std"]:.1f}'
      top1 += ' | ' + ' / '.join(_pct(x) for x in v['top1_runs'])
    lines.append(f'| {v["label"]} | {top1} | {_pct(v["top5"])} | {_count(v["params"])} | {macs} | '
                 f'{_duration(v["train_time_s"])} |')
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[dict], path: paths.PathLike, title: str = '') -> None:
  """Top-1 and top-5 bars per variant (unfinished variants left empty), saved as a PNG (local or gs://).

  With several seeds the bars are means, top-1 carries a ± one standard deviation error bar and a dot per seed.
  """
  # Figure + Agg canvas rather than pyplot: no global backend switch, no figure left open in notebooks.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  variants = summarize(rows)
  n = len(variants)
  fig = Figure(figsize=(max(5.0, 1.2 * n + 2.0), 4.0))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x = np.arange(n)
  for offset, key, name in ((-0.2, 'top1', 'top-1'), (0.2, 'top5', 'top-5')):
    values = [100 * v[key] if v[key] is not None else 0.0 for v in variants]
    bars = ax.bar(x + offset, values, width=0.4, label=name)
    for bar, v in zip(bars, variants):
      if v[key] is not None:
        # Above the error bar and the seeds' dots, so that the figure stays readable.
        top = max([bar.get_height()] + ([100 * (v['top1'] + (v['top1_std'] or 0.0))]
                                        + [100 * t for t in v['top1_runs'] if t is not None] if key == 'top1' else []))
        ax.annotate(f'{100 * v[key]:.1f}', (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 2),
                    textcoords='offset points', ha='center', va='bottom', fontsize=7)
  for i, v in enumerate(variants):
    if v['top1_std'] is not None:
      ax.errorbar(i - 0.2, 100 * v['top1'], yerr=100 * v['top1_std'], color='black', capsize=3, linewidth=1)
    runs = [100 * t for t in v['top1_runs'] if t is not None]
    if len(v['seeds']) > 1 and runs:
      ax.plot([i - 0.2] * len(runs), runs, linestyle='none', marker='o', markersize=3, color='black')
  ax.set_xticks(x, [v['label'] for v in variants], rotation=20, ha='right', fontsize=8)
  ax.set_ylabel('test accuracy (%)' + (' (mean over seeds)' if any(len(v['seeds']) > 1 for v in variants) else ''))
  ax.set_ylim(0, 110)
  ax.legend(loc='lower right')
  ax.set_title(title)
  fig.tight_layout()
  image = io.BytesIO()  # matplotlib writes local files only; epath writes the bytes anywhere.
  fig.savefig(image, format='png', dpi=100)
  paths.as_path(path).write_bytes(image.getvalue())


def write_results(rows: Sequence[dict], workdir: str, title: str = '') -> list[dict]:
  """Writes ``results.csv`` (one row per run), ``results.md`` and ``results.png`` (one per variant) into ``workdir``
  (local or gs://); returns the rows."""
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
  seeds = check_seeds(f.seeds)
  if seeds and 'seed' in extra:
    raise SweepError('Give the seeds either with --seeds or with --set=seed=..., not both.')
  if f.print_commands:
    print('\n'.join(commands(f.config, f.workdir, extra=extra, only_unfinished=not f.all_commands, seeds=seeds)))
    return
  if f.collect_only:
    rows = write_results(collect(f.config, f.workdir, extra=extra, seeds=seeds), f.workdir)
  else:
    rows = run(f.config, f.workdir, extra=extra, seeds=seeds)
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
  flags.DEFINE_list('seeds', [], 'Train every variant once per seed (0,1,2): the config\'s own seed in <name>, '
                    'the others in <name>_seed<k>; results.md gives mean ± sd and each seed\'s top-1.')
  flags.mark_flags_as_required(['config', 'workdir'])

  def run_main(argv):
    logging.set_verbosity(logging.INFO)
    from nonlocal_jax import training  # pylint: disable=g-import-not-at-top
    try:
      main(argv)
    except (SweepError, training.ConfigError, training.NonFiniteLossError) as e:
      sys.exit(f'Error: {e}')
  app.run(run_main)


if __name__ == '__main__':
  _define_flags_and_run()
