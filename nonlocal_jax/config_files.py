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


def load_sibling(caller_file: str, name: str):
  """The config ``name`` (e.g. 'default') from the folder of ``caller_file`` (a config's ``__file__``)."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(caller_file)), f'{name}.py'))
