"""Evaluation over several processes: every process gets the one-process result, and errors reach all of them."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from nonlocal_jax import evaluate as ev
from tests.evaluate import cases
from tests.evaluate.cases import NUM_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _single(id_kind='int', **kwargs):
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=5, id_kind=id_kind)
  return ev.evaluate(cases.fake_predict(id_kind), batches, num_classes=NUM_CLASSES, **kwargs)


def _run_processes(shares, id_kind='int', pad_batches=(0, 0), edit=None):
  processes = cases.FakeProcesses(len(shares))

  def process(p):
    batches = cases.make_batches(shares[p], batch_size=3, id_kind=id_kind, pad_batches=pad_batches[p])
    if edit:
      edit(p, batches)
    return ev.evaluate(cases.fake_predict(id_kind), batches, num_classes=NUM_CLASSES,
                       gather=processes.gather_for(p))

  return processes, processes.run(process)


def test_shares_of_the_views_are_split_as_claimed():
  p0, p1 = ({n for n, _ in share} for share in cases.PROCESS_VIEWS)
  assert p0 & p1 == {'c'} and len(p0) != len(p1)
  assert sorted(cases.PROCESS_VIEWS[0] + cases.PROCESS_VIEWS[1]) == sorted(cases.VIEW_ORDER)


@pytest.mark.parametrize('id_kind', ['int', 'bytes', 'str'])
def test_gathered_result_equals_one_process_with_all_data(id_kind):
  processes, results = _run_processes(cases.PROCESS_VIEWS, id_kind, pad_batches=(0, 2))
  reference = _single(id_kind)
  assert reference.metrics == cases.EXPECTED_METRICS
  for result in results:
    assert isinstance(result, ev.EvalResult), result
    cases.assert_same_result(result, reference)
  assert processes.calls == [2, 2]  # Header, then the per-video table; no third call without an error.


def test_a_process_without_videos():
  _, results = _run_processes([cases.VIEW_ORDER, []], 'str', pad_batches=(0, 3))
  for result in results:
    cases.assert_same_result(result, _single('str'))


def test_no_views_on_any_process():
  _, results = _run_processes([[], []], pad_batches=(1, 2))
  for result in results:
    assert isinstance(result, ValueError) and 'no unmasked views' in str(result), result


def test_ids_of_different_types_on_different_processes():
  processes = cases.FakeProcesses(2)

  def process(p):
    kind = ('int', 'bytes')[p]
    batches = cases.make_batches(cases.PROCESS_VIEWS[p], batch_size=3, id_kind=kind)
    return ev.evaluate(cases.fake_predict(kind), batches, num_classes=NUM_CLASSES, gather=processes.gather_for(p))

  for result in processes.run(process):
    assert isinstance(result, ValueError) and 'different types (integers, bytes)' in str(result), result


def test_an_error_on_one_process_is_raised_on_all():
  def edit(p, batches):
    if p == 1:  # A view of video d (id 14, label 1) gets label 3.
      batches[0]['label'][batches[0]['video_id'] == 14] = 3

  shares = [cases.PROCESS_VIEWS[0], cases.PROCESS_VIEWS[1] + [('d', 1)]]
  processes, results = _run_processes(shares, edit=edit)
  for result in results:
    assert isinstance(result, ValueError), result
    assert str(result).startswith('process 1: Video 14 has views with different labels (3 and 1)')
  assert processes.calls == [2, 2]  # Header, then the messages: every process stopped at the same place.


def test_labels_that_disagree_across_processes():
  def edit(p, batches):
    if p == 1:  # Video c (id 13, label 5 on process 0) gets label 0 on process 1.
      for b in batches:
        b['label'][b['video_id'] == 13] = 0

  _, results = _run_processes(cases.PROCESS_VIEWS, edit=edit)
  for result in results:
    assert isinstance(result, ValueError) and 'Video 13 has views with different labels' in str(result), result
    assert 'different processes' in str(result)


def test_one_process_runs_no_collective(monkeypatch):
  def forbidden(x):
    raise AssertionError('a single process must not gather')

  monkeypatch.setattr(ev, 'process_allgather', forbidden)
  assert _single().metrics == cases.EXPECTED_METRICS


def test_the_real_gather_on_one_process():
  cases.assert_same_result(_single('bytes', gather=ev.process_allgather), _single('bytes'))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_real_processes(tmp_path):
  env = {**os.environ, 'PYTHONPATH': REPO}
  env.pop('XLA_FLAGS', None)
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, '-m', 'tests.evaluate.multihost_worker', str(p), str(port), 'str',
                               str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for p in range(2)]
  outputs = []
  for w in workers:
    try:
      outputs.append(w.communicate(timeout=90)[0].decode(errors='replace'))
    except subprocess.TimeoutExpired:
      for other in workers:
        other.kill()
      pytest.fail('the two evaluation processes did not finish in 90 s')
  for w, out in zip(workers, outputs):
    assert w.returncode == 0, out[-3000:]
  reference = _single('str', class_names=[f'class {i}' for i in range(NUM_CLASSES)])
  for p in range(2):
    loaded = ev.load_results(str(tmp_path), prefix=f'process{p}')
    cases.assert_same_result(loaded, reference)
  # Sorted ids; é sorts after the ASCII letters.
  np.testing.assert_array_equal(loaded.video_ids, ['a', 'bbbbbbbbb/long_name_0001', 'ccc', 'ddddddd', 'ff', 'ééé'])
  np.testing.assert_array_equal(loaded.video_num_views, [2, 2, 4, 1, 1, 2])
