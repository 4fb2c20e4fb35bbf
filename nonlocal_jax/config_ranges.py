"""The valid range of every config field, declared next to its default in configs/default.py and checked at start-up.

configs/default.py builds each section with ``declare``: ``field('momentum', 0.9, number(0, 1, high_open=True))``
sets ``config.train.momentum = 0.9`` and records what the field allows. ``check(config)`` then tests every declared
field of a config (whatever config file and --config overrides made it) and raises ``OutOfRange`` with one
sentence: ``config.train.momentum=-0.5 is out of range: use a number in [0, 1).`` The model section is not
declared here: the model classes check their own fields (``build_model``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, Optional

import ml_collections

from nonlocal_jax import config_files

# Dotted field path ('train.momentum') -> what it allows; filled whenever configs/default.py builds a config.
_DECLARED: dict[str, 'Allowed'] = {}
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'default.py')


class OutOfRange(ValueError):
  """A config field holds a value outside its declared range; the message names field, value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Allowed:
  """What one field allows: ``problem(value)`` is None when the value is allowed, else what to use instead.

  ``type`` is the field's type (the placeholder's type when the default is None); ``optional`` also allows None;
  ``kind`` and ``bounds`` are the declaring function's name and arguments (the tests derive invalid values).
  """
  type: type
  test: Callable[[Any], Optional[str]]
  description: str
  optional: bool = False
  kind: str = ''
  bounds: tuple = ()

  def problem(self, value) -> Optional[str]:
    """None if ``value`` is allowed, else the end of the sentence: what to use ('a number in [0, 1)')."""
    if value is None:
      return None if self.optional else self.description
    detail = self.test(value)
    if detail is None:
      return None
    return self.description + (' or None' if self.optional else '') + (f' ({detail})' if detail else '')


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _show(x) -> str:
  return str(x) if _is_int(x) else f'{x:g}'


def _interval(low, high, low_open, high_open) -> str:
  if high is None:
    return f'> {_show(low)}' if low_open else f'≥ {_show(low)}'
  if low is None:
    return f'< {_show(high)}' if high_open else f'≤ {_show(high)}'
  return f"{'(' if low_open else '['}{_show(low)}, {_show(high)}{')' if high_open else ']'}"


def _within(v, low, high, low_open, high_open) -> bool:
  return ((low is None or (v > low if low_open else v >= low)) and
          (high is None or (v < high if high_open else v <= high)))


def integer(low: Optional[int] = None, high: Optional[int] = None, optional: bool = False,
            high_open: bool = False) -> Allowed:
  """A whole number in [low, high] (``high_open``: [low, high)); None allowed if ``optional``."""
  where = _interval(low, high, False, high_open)
  return Allowed(int, lambda v: None if _is_int(v) and _within(v, low, high, False, high_open) else '',
                 f'a whole number {"in " if high is not None else ""}{where}', optional, 'integer',
                 (low, high, high_open))


def number(low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
           high_open: bool = False) -> Allowed:
  """A finite number between ``low`` and ``high`` (each end included unless its ``*_open``)."""
  where = _interval(low, high, low_open, high_open)
  return Allowed(float, lambda v: None if _is_number(v) and _within(v, low, high, low_open, high_open) else '',
                 f'a number {"in " if low is not None and high is not None else ""}{where}', False, 'number',
                 (low, high, low_open, high_open))


def numbers(count: int, low: float, low_open: bool = False) -> Allowed:
  """A tuple of ``count`` finite numbers, each above ``low`` (or at it, unless ``low_open``)."""
  def test(v):
    ok = isinstance(v, (tuple, list)) and len(v) == count and all(
        _is_number(x) and _within(x, low, None, low_open, False) for x in v)
    return None if ok else ''
  return Allowed(tuple, test, f'{count} numbers {_interval(low, None, low_open, False)}', False, 'numbers',
                 (count, low, low_open))


def increasing_integers(low: int) -> Allowed:
  """A tuple (possibly empty) of whole numbers ≥ ``low`` in increasing order."""
  def test(v):
    ok = isinstance(v, (tuple, list)) and all(_is_int(x) and x >= low for x in v) and all(
        a < b for a, b in zip(v, v[1:]))
    return None if ok else ''
  return Allowed(tuple, test, f'a tuple of whole numbers ≥ {low} in increasing order', False,
                 'increasing_integers', (low,))


def one_of(*values) -> Allowed:
  """One of ``values`` (strings)."""
  return Allowed(type(values[0]), lambda v: None if v in values else '',
                 'one of ' + ', '.join(repr(x) for x in values), False, 'one_of', values)


def flag() -> Allowed:
  """True or False."""
  return Allowed(bool, lambda v: None if isinstance(v, bool) else '', 'True or False', False, 'flag')


def text(optional: bool = False) -> Allowed:
  """A non-empty string; None allowed if ``optional``."""
  return Allowed(str, lambda v: None if isinstance(v, str) and v.strip() else '', 'a non-empty string', optional,
                 'text')


def matching(pattern: str, what: str, optional: bool = False) -> Allowed:
  """A string that ``pattern`` matches in full, described as ``what`` ("'host:port'")."""
  return Allowed(str, lambda v: None if isinstance(v, str) and re.fullmatch(pattern, v) else '', what, optional,
                 'matching', (pattern,))


def _regex_error(v) -> Optional[str]:
  if not isinstance(v, str):
    return ''
  try:
    re.compile(v)
  except re.error as e:
    return str(e)
  return None


def regex(optional: bool = False) -> Allowed:
  """A regular expression that compiles (over '/'-joined parameter paths); None allowed if ``optional``."""
  return Allowed(str, _regex_error, 'a valid regular expression', optional, 'regex')


def regex_multipliers() -> Allowed:
  """A tuple of (regex, multiplier ≥ 0) pairs."""
  def test(v):
    if not isinstance(v, (tuple, list)):
      return ''
    for pair in v:
      if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and _is_number(pair[1]) and pair[1] >= 0):
        return ''
      error = _regex_error(pair[0])
      if error is not None:
        return error
    return None
  return Allowed(tuple, test, 'a tuple of (regular expression, number ≥ 0) pairs', False,
                 'regex_multipliers')


def declare(section: ml_collections.ConfigDict, path: str) -> Callable[..., None]:
  """A function ``field(name, default, allowed)`` that sets ``section[name]`` and records its range.

  ``path`` is the section's dotted path in the config ('train', 'data.synthetic', '' for the top level). A None
  default becomes a placeholder of ``allowed.type`` (so that --config.<field>=<value> can set it).
  """
  def field(name: str, default, allowed: Allowed) -> None:
    section[name] = ml_collections.config_dict.placeholder(allowed.type) if default is None else default
    _DECLARED[f'{path}.{name}' if path else name] = allowed
  return field


def declared() -> dict[str, Allowed]:
  """{dotted field path: Allowed} of configs/default.py (built once if no config was built in this process)."""
  if not _DECLARED:
    config_files.load_module(DEFAULT_CONFIG).get_config()
  return dict(_DECLARED)


def check(config) -> None:
  """Raises OutOfRange naming the first declared field of ``config`` whose value is outside its range.

  Fields a config does not have (a config file may drop a section) are skipped.
  """
  for path, allowed in declared().items():
    node, found = config, True
    for key in path.split('.'):
      if not (hasattr(node, 'keys') and key in node):
        found = False
        break
      node = node[key]
    if not found:
      continue
    problem = allowed.problem(node)
    if problem is not None:
      raise OutOfRange(f'config.{path}={node!r} is out of range: use {problem}.')
