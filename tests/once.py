"""Expensive set-up that the test workers share: done by the first worker that asks, read by the others.

With ``pytest -n 2`` a module's tests are spread over both workers, and a module- or session-scoped fixture runs
once in each: twice the work for the slow ones (a training run, a prepared dataset, a subprocess). ``once`` runs
it a single time per test session under a file lock in the session's shared temporary folder, and hands every
worker the same JSON result and folder.
"""

import fcntl
import json
import os
import pathlib
import shutil
from typing import Any, Callable


def shared_root(tmp_path_factory) -> pathlib.Path:
  """The folder every worker of this test session sees (the session's own base folder without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def once(tmp_path_factory, name: str, make: Callable[[pathlib.Path], Any]) -> Any:
  """``make(folder)``'s JSON-serialisable result, computed by the first caller of this session (in the new, empty
  ``folder``) and read back by the others; a failed ``make`` leaves nothing behind, so the next caller retries."""
  root = shared_root(tmp_path_factory)
  folder, result_path = root / name, root / f'{name}.json'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if make raises.
    if result_path.exists():
      return json.loads(result_path.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
      result = make(folder)
    except BaseException:
      shutil.rmtree(folder, ignore_errors=True)
      raise
    result_path.write_text(json.dumps(result))
    return result
