"""Sweeps run: a two-variant sweep trains, stops, resumes (finished variants skipped) and writes its results, also
on a remote file system and over several seeds; printed main.py commands build exactly the variants' configs."""

import csv
import json
import os
import shlex

import pytest

from nonlocal_jax import sweep
from nonlocal_jax import training
from tests import remote
from tests.sweep import helpers

SPEC = helpers.SPEC


class Stop(Exception):
  """Raised by a patched trainer to stop a sweep part-way, as a preemption would."""


def test_sweep_runs_stops_resumes_and_writes_results(tmp_path):
  workdir, data_dir = str(tmp_path / 'sweep'), str(tmp_path / 'data')
  extra = {'data.data_dir': data_dir}
  trained = []

  def stop_after_first(config, sub):
    if trained:
      raise Stop()
    trained.append(os.path.basename(sub))
    return training.train_and_evaluate(config, sub)  # The one real training of the sweep tests.

  with pytest.raises(Stop):
    sweep.run(SPEC, workdir, extra=extra, train_fn=stop_after_first, log=lambda _: None)
  assert trained == ['c2d']
  rows = sweep.collect(SPEC, workdir, extra=extra)
  assert [(r['name'], r['status']) for r in rows] == [('c2d', 'finished'), ('nl_dot', 'missing')]
  assert sweep.progress(rows) == '1 of 2 runs finished; missing: nl_dot.'

  # Only the unfinished variant is left to a scheduler, and its command builds exactly its config.
  lines = sweep.commands(SPEC, workdir, extra=extra)
  assert len(lines) == 1 and '--workdir=' + os.path.join(workdir, 'nl_dot') in lines[0]
  [(config, sub)] = helpers.configs_from_commands(lines)
  base = sweep.load_module(SPEC).get_config()
  expected = sweep.variant_config(base, sweep.load_variants(sweep.load_module(SPEC))[1], extra)
  assert json.dumps(config, sort_keys=True) == json.dumps(expected.to_dict(), sort_keys=True)
  assert sub == os.path.join(workdir, 'nl_dot')
  assert config['model']['nonlocal_block']['pairwise'] == 'dot_product' and config['data']['data_dir'] == data_dir

  resumed, logs = [], []

  def record(config, sub):
    # What train_and_evaluate leaves, without compiling a second network: the c2d run above is the real one.
    resumed.append(os.path.basename(sub))
    helpers.fake_run(config, sub, {'video_top1': 0.625, 'clip_top1': 0.5})  # 2 classes: no top-5 reported.

  rows = sweep.run(SPEC, workdir, extra=extra, train_fn=record, log=logs.append)
  assert resumed == ['nl_dot'] and 'c2d: finished, skipped' in logs[0]

  def must_not_train(config, sub):
    raise AssertionError(f'{sub} was trained again')

  rows = sweep.run(SPEC, workdir, extra=extra, train_fn=must_not_train, log=lambda _: None)
  assert sweep.commands(SPEC, workdir, extra=extra) == []
  assert sweep.progress(rows) == '2 of 2 runs finished.'

  with open(os.path.join(workdir, 'results.csv')) as f:
    table = list(csv.DictReader(f))
  assert [r['name'] for r in table] == ['c2d', 'nl_dot'] and {r['status'] for r in table} == {'finished'}
  for r in table:
    assert 0.0 <= float(r['top1']) <= 1.0 and r['top5'] == '' and float(r['train_time_s']) > 0  # 2 classes.
  assert int(table[1]['params']) > int(table[0]['params']) > 0  # The non-local block adds weights.
  assert int(table[1]['macs']) > int(table[0]['macs']) > 0
  markdown = open(os.path.join(workdir, 'results.md')).read().splitlines()
  assert markdown[0] == '| model | top-1 | params | multiply-adds | train time |'  # No top-5 for 2 classes.
  assert [line.split('|')[1].strip() for line in markdown[2:]] == ['C2D baseline', 'NL dot-product']
  assert f'{100 * rows[0]["top1"]:.1f}' == markdown[2].split('|')[2].strip()
  with open(os.path.join(workdir, 'results.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_remote_sweep_writes_and_reads_everything_there(remote_dir, tmp_path, monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)  # Where a wrongly local './ram:/...' folder would appear.
  workdir = f'{remote_dir}/sweep'
  metrics = {'c2d': {'video_top1': 0.5, 'video_top5': 1.0, 'clip_top1': 0.25},
             'nl_dot': {'video_top1': 0.75, 'video_top5': 1.0, 'clip_top1': 0.5}}

  def fake_train(config, sub):
    # What train_and_evaluate leaves for the sweep: config.json, then the final test metrics.
    tf.io.gfile.makedirs(f'{sub}/eval')
    with tf.io.gfile.GFile(f'{sub}/config.json', 'w') as f:
      f.write(config.to_json_best_effort())
    with tf.io.gfile.GFile(sweep.metrics_path(config, sub), 'w') as f:
      json.dump(metrics[sub.rsplit('/', 1)[1]], f)

  rows = sweep.run(SPEC, workdir, train_fn=fake_train, log=lambda _: None)
  assert [(r['name'], r['status'], r['top1']) for r in rows] == [('c2d', 'finished', 0.5), ('nl_dot', 'finished', 0.75)]
  files = remote.files_under(workdir)
  assert {'results.csv', 'results.md', 'results.png', 'c2d/sweep_time.json', 'nl_dot/sweep_time.json'} <= set(files)
  table = list(csv.DictReader(files['results.csv'].decode().splitlines()))
  assert [(r['name'], r['top1'], r['workdir']) for r in table] == [('c2d', '0.5', f'{workdir}/c2d'),
                                                                   ('nl_dot', '0.75', f'{workdir}/nl_dot')]
  assert b'| NL dot-product | 75.0 | 100.0 |' in files['results.md'] and files['results.png'][:4] == b'\x89PNG'

  def must_not_train(config, sub):
    raise AssertionError(f'{sub} was trained again')

  sweep.run(SPEC, workdir, train_fn=must_not_train, log=lambda _: None)
  # A run started from --print_commands has no sweep_time.json: its time comes from the modification times of its
  # files, read on their file system (ram:// records none, GCS does).
  tf.io.gfile.remove(f'{workdir}/c2d/sweep_time.json')
  assert sweep.collect(SPEC, workdir)[0]['train_time_s'] is not None
  assert os.listdir(tmp_path) == []


def test_seeds_reuse_the_one_seed_runs_and_report_mean_and_spread(tmp_path):
  workdir = str(tmp_path / 'sweep')
  # Made-up accuracies per (variant, seed); the sweep must report their mean and sample standard deviation.
  top1 = {('c2d', 0): 0.5, ('c2d', 3): 0.6, ('nl_dot', 0): 0.9, ('nl_dot', 3): 0.7}
  trained = []

  def fake_train(config, sub):
    name = os.path.basename(sub).split('_seed')[0]
    trained.append((os.path.basename(sub), config.seed))
    os.makedirs(os.path.join(sub, 'eval'), exist_ok=True)
    with open(os.path.join(sub, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort())
    with open(sweep.metrics_path(config, sub), 'w') as f:
      json.dump({'video_top1': top1[name, config.seed], 'video_top5': 1.0, 'clip_top1': 0.5}, f)

  sweep.run(SPEC, workdir, train_fn=fake_train, log=lambda _: None)  # A one-seed sweep first.
  assert trained == [('c2d', 0), ('nl_dot', 0)]
  lines = sweep.commands(SPEC, workdir, seeds=['0', '3'])
  # Seed 0, the config's own, is already trained in <name>; seed 3 goes to <name>_seed3 with its flag.
  assert [shlex.split(line)[3] for line in lines] == [f'--workdir={workdir}/c2d_seed3',
                                                     f'--workdir={workdir}/nl_dot_seed3']
  [(config, _)] = helpers.configs_from_commands(lines[1:])
  assert config['seed'] == 3 and config['model']['nonlocal_block']['pairwise'] == 'dot_product'

  rows = sweep.run(SPEC, workdir, train_fn=fake_train, log=lambda _: None, seeds=(0, 3))
  assert trained[2:] == [('c2d_seed3', 3), ('nl_dot_seed3', 3)]
  assert [(r['name'], r['seed'], r['top1']) for r in rows] == [('c2d', 0, 0.5), ('c2d', 3, 0.6),
                                                               ('nl_dot', 0, 0.9), ('nl_dot', 3, 0.7)]
  with open(os.path.join(workdir, 'results.csv')) as f:
    assert [(r['name'], r['seed']) for r in csv.DictReader(f)] == [('c2d', '0'), ('c2d', '3'), ('nl_dot', '0'),
                                                                   ('nl_dot', '3')]
  markdown = open(os.path.join(workdir, 'results.md')).read().splitlines()
  assert markdown[0].startswith('| model | top-1 (mean ± sd) | runs (seeds 0, 3) |')
  # By hand: c2d mean 55.0, sd sqrt(2 * 0.05**2 / 1) = 7.07; nl_dot mean 80.0, sd 14.14.
  assert markdown[2].split('|')[1:4] == [' C2D baseline ', ' 55.0 ± 7.1 ', ' 50.0 / 60.0 ']
  assert markdown[3].split('|')[1:4] == [' NL dot-product ', ' 80.0 ± 14.1 ', ' 90.0 / 70.0 ']

  os.remove(sweep.metrics_path(sweep.load_module(SPEC).get_config(), os.path.join(workdir, 'nl_dot_seed3')))
  [c2d, nl] = sweep.summarize(sweep.collect(SPEC, workdir, seeds=(0, 3)))
  assert c2d['status'] == 'finished' and nl['status'] == 'partial'
  assert nl['score'] == nl['top1'] == 0.9 and nl['score_std'] is None and nl['score_runs'] == [0.9, None]
  assert '| 90.0 | 90.0 / — |' in sweep.markdown_table(sweep.collect(SPEC, workdir, seeds=(0, 3)))
