"""Loading config files by path: configs/ is a folder of files (as --config reads them), not a package."""

from __future__ import annotations

import importlib.util
import os
import re


def load_module(path: str, prefix: str = 'config_'):
  """Executes the Python file at ``path`` and returns it as a module."""
  name = prefix + re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_arg(arg, choices: dict, config_name: str) -> dict:
  """A config argument 'key=value,key=value' -> {key: choices[key][value]}; one sentence names what is allowed.

  Args:
    arg: the text after the ':' of --config=configs/<name>.py:<arg>, or None.
    choices: {key: {value as written: value it stands for}}.
    config_name: the config's file name, for the message ('configs/kinetics_nl.py').
  """
  parsed = {}
  for item in filter(None, (s.strip() for s in (arg or '').split(','))):
    key, sep, value = item.partition('=')
    if not sep or key not in choices:
      raise ValueError(f'{config_name} takes key=value arguments with a key among {sorted(choices)}; got {item!r}.')
    if value not in choices[key]:
      raise ValueError(f'{config_name} argument {key}={value!r}: the value must be one of {sorted(choices[key])}.')
    parsed[key] = choices[key][value]
  return parsed


def load_sibling(caller_file: str, name: str):
  """The config ``name`` (e.g. 'default') from the folder of ``caller_file`` (a config's ``__file__``)."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(caller_file)), f'{name}.py'))
