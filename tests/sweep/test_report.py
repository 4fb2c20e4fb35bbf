"""A sweep's report: how many runs finished and which are missing, and no chart while none has."""

import os

from nonlocal_jax import sweep
from tests.sweep import helpers

SPEC = helpers.SPEC


def test_the_report_counts_the_finished_runs_and_names_the_missing(tmp_path):
  workdir = str(tmp_path / 'sweep')
  rows = sweep.write_results(sweep.collect(SPEC, workdir), workdir)
  assert sweep.progress(rows) == '0 of 2 runs finished; missing: c2d, nl_dot.'
  assert not os.path.exists(os.path.join(workdir, 'results.png'))  # Nothing to draw.
  assert 'no chart' in sweep.describe(rows, workdir)
  assert [line.split('|')[2].strip() for line in open(os.path.join(workdir, 'results.md')).readlines()[2:]] == [
      '—', '—']

  config = sweep.load_module(SPEC).get_config()
  helpers.fake_run(config, os.path.join(workdir, 'c2d'), {'video_top1': 0.5, 'video_top5': 1.0, 'clip_top1': 0.5})
  rows = sweep.write_results(sweep.collect(SPEC, workdir, seeds=(0, 3)), workdir)
  assert sweep.progress(rows) == '1 of 4 runs finished; missing: c2d_seed3, nl_dot, nl_dot_seed3.'
  described = sweep.describe(rows, workdir)
  assert '1 of 4 runs finished' in described and 'results.png' in described
  with open(os.path.join(workdir, 'results.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'

  # A chart left from before would contradict a table with nothing finished: it goes.
  os.remove(sweep.metrics_path(config, os.path.join(workdir, 'c2d')))
  sweep.write_results(sweep.collect(SPEC, workdir), workdir)
  assert not os.path.exists(os.path.join(workdir, 'results.png'))
