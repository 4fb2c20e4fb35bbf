"""Evaluation over several processes: every process gets the one-process result, and errors reach all of them."""

import dataclasses
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from nonlocal_jax import evaluation as ev
from nonlocal_jax.evaluation import gather
from tests.evaluation import cases
from tests.evaluation.cases import NUM_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _single(**kwargs):
  batches = cases.make_batches(cases.VIEW_ORDER, batch_size=5)
  return ev.evaluate(cases.fake_predict(), batches, num_classes=NUM_CLASSES, **kwargs)


def _run_processes(shares, pad_batches=(0, 0), edit=None):
  processes = cases.FakeProcesses(len(shares))

  def process(p):
    batches = cases.make_batches(shares[p], batch_size=3, pad_batches=pad_batches[p])
    if edit:
      edit(p, batches)
    return ev.evaluate(cases.fake_predict(), batches, num_classes=NUM_CLASSES,
                       gather=processes.gather_for(p))

  return processes, processes.run(process)


def test_shares_of_the_views_are_split_as_claimed():
  p0, p1 = ({n for n, _ in share} for share in cases.PROCESS_VIEWS)
  assert p0 & p1 == {'c'} and len(p0) != len(p1)
  assert sorted(cases.PROCESS_VIEWS[0] + cases.PROCESS_VIEWS[1]) == sorted(cases.VIEW_ORDER)


def test_gathered_result_equals_one_process_with_all_data():
  processes, results = _run_processes(cases.PROCESS_VIEWS, pad_batches=(0, 2))
  reference = _single()
  assert reference.metrics == cases.EXPECTED_METRICS
  for result in results:
    assert isinstance(result, ev.EvalResult), result
    cases.assert_same_result(result, reference)
  assert processes.calls == [2, 2]  # Header, then the per-video table; no third call without an error.


def test_a_process_without_videos():
  _, results = _run_processes([cases.VIEW_ORDER, []], pad_batches=(0, 3))
  for result in results:
    cases.assert_same_result(result, _single())


def test_no_views_on_any_process():
  _, results = _run_processes([[], []], pad_batches=(1, 2))
  for result in results:
    assert isinstance(result, ValueError) and 'no unmasked views' in str(result), result


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


def test_the_exchange_is_bit_exact_and_keeps_each_process_apart():
  # Values that 32-bit floats or ints would round: what a gather without jax_enable_x64 would do to them.
  shares = [gather.Share(ids=np.array([2**40 + p, 7]), sums=np.array([[0.1 + 1e-12 * p, 1 / 3], [2.0**-60, 1e300]]),
                         counts=np.array([2**33, 1]), labels=np.array([1, 0]), views=3 + p, top1=p, top5=2)
            for p in range(2)]
  shares[1] = dataclasses.replace(shares[1], ids=shares[1].ids[:1], sums=shares[1].sums[:1],
                                  counts=shares[1].counts[:1], labels=shares[1].labels[:1])
  processes = cases.FakeProcesses(2)
  for got in processes.run(lambda p: gather.exchange(shares[p], processes.gather_for(p))):
    assert isinstance(got, list) and len(got) == 2, got
    for sent, received in zip(shares, got):
      for field in ('ids', 'sums', 'counts', 'labels'):
        np.testing.assert_array_equal(getattr(received, field), getattr(sent, field), err_msg=field)
        assert getattr(received, field).dtype == getattr(sent, field).dtype, field
      assert (received.views, received.top1, received.top5, received.error) == (sent.views, sent.top1, sent.top5, '')
  assert processes.calls == [2, 2]


def test_one_process_runs_no_collective(monkeypatch):
  def forbidden(x):
    raise AssertionError('a single process must not gather')

  monkeypatch.setattr(gather, 'process_allgather', forbidden)
  assert _single().metrics == cases.EXPECTED_METRICS


def test_the_real_gather_on_one_process():
  cases.assert_same_result(_single(gather=gather.process_allgather), _single())


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_real_processes(tmp_path):
  env = {**os.environ, 'PYTHONPATH': REPO}
  env.pop('XLA_FLAGS', None)
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, '-m', 'tests.evaluation.multihost_worker', str(p), str(port),
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
  reference = _single(class_names=[f'class {i}' for i in range(NUM_CLASSES)])
  for p in range(2):
    loaded = ev.load_results(str(tmp_path), prefix=f'process{p}')
    cases.assert_same_result(loaded, reference)
  # Sorted ids, each video once, with the views of both processes.
  np.testing.assert_array_equal(loaded.video_ids, [11, 12, 13, 14, 15, 16])
  np.testing.assert_array_equal(loaded.video_num_views, [2, 2, 4, 1, 2, 1])
