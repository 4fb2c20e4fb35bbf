"""The README shows exactly the set-up and test commands that CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ci_commands():
  lines = (ROOT / '.ci' / 'run').read_text().splitlines()
  return [l.strip() for l in lines if l.startswith(('pip install', 'python -m pytest'))]


def test_ci_runs_the_readme_commands():
  readme = (ROOT / 'README.md').read_text()
  blocks = re.findall(r'```bash\n(.*?)```', readme, flags=re.S)
  readme_lines = {l.strip() for block in blocks for l in block.splitlines()}
  commands = _ci_commands()
  assert len(commands) == 2, commands
  for command in commands:
    assert command in readme_lines, f'.ci/run runs {command!r}, which the README does not show'
