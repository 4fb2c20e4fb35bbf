"""A sweep's variants: its config module, the dotted overrides of each variant, and the runs (variants × seeds).

A sweep config is an ordinary config module (``get_config(arg)``, which main.py reads) that also defines
``get_sweep(arg)``: a list of dicts of dotted overrides of any depth ('model.nonlocal_block.pairwise',
'data.synthetic.num_train') plus an optional ``name`` (the run's sub-workdir) and ``label`` (its row in the table).
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import os
import re
from typing import Any, Optional, Sequence

from nonlocal_jax import config_files

_NAME = re.compile(r'[A-Za-z0-9_.=,-]+')


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
  """A locked copy of ``base`` with the variant's overrides (then ``extra``) applied; unknown fields fail.

  Keys are dotted paths of any depth ('train.num_steps', 'data.synthetic.num_train').
  """
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


def parse_overrides(items: Sequence[str]) -> dict:
  """['data.data_dir=/x', 'train.num_steps=2'] -> {'data.data_dir': '/x', 'train.num_steps': 2} (literals parsed)."""
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
class Run:
  """One training run of a sweep: a variant at one seed, its full config and its directory."""
  variant: Variant
  config: Any
  workdir: str
  seed: int
  seed_override: dict  # {'seed': k} where k is not the config's own seed, else {}.


def resolve_runs(spec: str, workdir: str, extra: Optional[dict] = None,
                 seeds: Optional[Sequence[int]] = None) -> list[Run]:
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
        runs.append(Run(v, config, run_dir(workdir, v.name, base_seed, base_seed), base_seed, {}))
      else:
        config = variant_config(base, v, {**(extra or {}), 'seed': seed})
        runs.append(Run(v, config, run_dir(workdir, v.name, seed, base_seed), seed, {'seed': seed}))
  return runs
