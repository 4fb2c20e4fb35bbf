"""The state of one ``python -m bench.device`` run: its payload (rewritten as JSON and markdown after every piece),
the time budget that pieces start within, and ``--resume`` (what an earlier run on the same device kind finished).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback

from bench import common
from bench import device_report


# The train steps that choose the formulations 'auto' takes on a device kind, per kind of network: bf16 R50 + 5 NL
# at 8 clips with the attention's 'auto' (the step for C2D).
FORMULATION_CASES = {'c2d': dict(network='c2d_nl', dtype='bfloat16', attention='auto', batch=8),
                     'i3d': dict(network='i3d_nl', dtype='bfloat16', attention='auto', batch=8)}


def formulations(train_rows) -> dict:
  """{kind: {'conv_implementation': ..., 'pool_implementation': ..., 'clips_per_s': {'conv, pool': clips/s}}}
  for each kind of network ('c2d', 'i3d') whose step was measured in at least two formulations: the fastest.
  Only steps whose variant sets convolutions and pools count: one compiled with its own XLA options ('xla=') is
  not something 'auto' can choose, and one with another model setting ('bn=flax') is a comparison of that."""
  out = {}
  for kind, case in FORMULATION_CASES.items():
    rates = {}
    for r in train_rows:
      settings = [s.partition('=')[0] for s in (r.get('variant') or '').split(',') if s]
      if (r.get('status') == 'ok' and all(r.get(k) == v for k, v in case.items())
          and set(settings) <= {'conv', 'pool'}):
        rates[device_report.row_formulation(r)] = r['clips_per_s']
    if len(rates) >= 2:
      conv, pool = max(rates, key=rates.get)
      out[kind] = {'conv_implementation': conv, 'pool_implementation': pool,
                   'clips_per_s': {f'{c}, {p}': round(v, 1) for (c, p), v in sorted(rates.items())}}
  return out


def error_line(e: BaseException) -> str:
  """An exception as one line of at most 400 characters, for a row's 'error'."""
  return f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}'[:400]


class Run:
  """The payload, rewritten (json and md) after every piece, and the time budget that pieces start within."""

  def __init__(self, args, slug, labels):
    self.args, self.start, self.table, self.labels = args, time.perf_counter(), None, labels
    self.dir = os.path.join(args.out_dir, slug)
    self.payload = dict(machine=common.machine_description(), slug=slug, tiny=args.tiny, repeats=args.repeats,
                        budget_s=args.budget_s, seconds=0.0, pieces={}, train=[], block=[], auto_entries=[])

  def resume(self) -> dict:
    """Loads the earlier run's payload (same device kind) into this one; returns {finished piece: its train row or
    None}."""
    path = os.path.join(self.dir, 'device.json')
    if not os.path.exists(path):
      print(f'--resume: no earlier run in {self.dir}; running every piece', flush=True)
      return {}
    with open(path) as f:
      previous = json.load(f)
    if previous['machine']['device'] != self.payload['machine']['device'] or previous['tiny'] != self.args.tiny:
      raise SystemExit(f"--resume: {path} was measured on {previous['machine']['device']} (tiny={previous['tiny']}); "
                       'remove it or run without --resume.')
    finished = {name for name, r in previous['pieces'].items() if r['status'] == 'ok'}
    done = {name: None for name in finished}
    done.update({row['piece']: row for row in previous['train'] if row['piece'] in finished})
    keep = lambda r: f"block {r['shape']} {r['dtype']} {r['pairwise']}" in finished
    p = self.payload
    p['pieces'] = {n: r for n, r in previous['pieces'].items() if n in finished}
    p['block'] = [r for r in previous['block'] if keep(r)]
    p['feed'] = [r for r in previous.get('feed', []) if r['piece'] in finished]
    p['auto_entries'] = previous['auto_entries']
    p['matmul'] = previous.get('matmul', {})
    p.update({k: v for k, v in previous.items() if k.startswith('profile') and v.get('status') == 'ok'})
    p['earlier_runs'] = previous.get('earlier_runs', []) + [dict(
        date=previous['machine']['date'], jax=previous['machine']['jax'], seconds=previous['seconds'])]
    print(f'--resume: keeping {len(finished)} finished pieces of {path}', flush=True)
    return done

  def left(self) -> float:
    return self.args.budget_s - (time.perf_counter() - self.start)

  def piece(self, name, fn, *a):
    """Runs ``fn(*a)`` unless the budget is spent; records its status; returns its result or None."""
    if self.left() <= 0:
      self.payload['pieces'][name] = {'status': 'skipped', 'reason': f'--budget_s={self.args.budget_s} spent'}
      return None
    print(f'[{time.perf_counter() - self.start:6.1f} s] {name}', flush=True)
    try:
      result = fn(*a)
      self.payload['pieces'][name] = {'status': 'ok'}
      return result
    except Exception as e:  # pylint: disable=broad-except  # One try on a lent device: record it and go on.
      traceback.print_exc()
      self.payload['pieces'][name] = {'status': 'failed', 'error': error_line(e)}
      return None
    finally:
      self.save()

  def save(self):
    """Rewrites device.json and device.md, and the 'auto' table (``self.table``: the attention entries and the
    network formulations measured so far); copies what is written to --also_to each time, so that a run stopped
    from outside still leaves its finished pieces there."""
    self.payload['seconds'] = time.perf_counter() - self.start
    self.payload['formulations'] = formulations(self.payload['train'])
    common.write_results('device', self.payload, device_report.to_markdown(self.payload, self.labels), self.dir,
                         echo=False)
    if self.table and (self.payload['auto_entries'] or self.payload['formulations']):
      os.makedirs(os.path.dirname(self.table), exist_ok=True)
      machine = self.payload['machine']
      with open(self.table, 'w') as f:
        json.dump({'device_kind': machine['device'], 'backend': machine['backend'], 'jax': machine['jax'],
                   'date': machine['date'], 'source': 'python -m bench.device',
                   'entries': self.payload['auto_entries'], 'formulations': self.payload['formulations']}, f,
                  indent=1)
    if self.args.also_to:
      os.makedirs(self.args.also_to, exist_ok=True)
      for path in [os.path.join(self.dir, n) for n in sorted(os.listdir(self.dir))] + [self.table]:
        if os.path.isfile(path):
          shutil.copy(path, os.path.join(self.args.also_to, os.path.basename(path)))
