"""The one top-k rule (ties count against, NaN never correct) on NumPy and inside jit/shard_map, and its kin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax import evaluation
from nonlocal_jax.evaluation import metrics

# Rows of the hand-computed case: (scores, label), and whether the label is top-1, top-2, top-3 by hand.
SCORES = np.array([
    [.5, .5, 0.],  # True class 0 tied with class 1 for the top.
    [1 / 3, 1 / 3, 1 / 3],  # Constant scores.
    [.2, .7, .1],  # True class 1 strictly best.
    [.1, .2, .7],  # True class 0 strictly last.
    [np.nan, .2, .7],  # NaN true score.
])
LABELS = np.array([0, 2, 1, 0, 0])
BY_HAND = {
    1: [False, False, True, False, False],
    2: [True, False, True, False, False],
    3: [True, True, True, True, False],
    5: [True, True, True, True, False],  # k beyond the number of classes: every finite row.
}


def test_top_k_ties_count_against_the_prediction():
  for k, expected in BY_HAND.items():
    np.testing.assert_array_equal(evaluation.top_k_correct(SCORES, LABELS, k), expected)
  # The rule does not depend on the order of the classes, which an argsort with its index tie-break would.
  perm = np.array([2, 0, 1])
  inverse = np.argsort(perm)
  for k in (1, 2, 3):
    np.testing.assert_array_equal(evaluation.top_k_correct(SCORES[:, perm], inverse[LABELS], k),
                                  evaluation.top_k_correct(SCORES, LABELS, k))


def test_top_k_on_the_host_stays_numpy_in_float64():
  # 1 + 1e-12 and 1 are distinct in float64 and equal in float32: the host rule must not round the scores.
  scores = np.array([[1 + 1e-12, 1.]])
  out = metrics.top_k_correct(scores, np.array([0]), 1)
  assert isinstance(out, np.ndarray) and out.dtype == bool and out.tolist() == [True]


@pytest.mark.parametrize('k', sorted(BY_HAND))
def test_top_k_inside_jit_matches_the_hand_computation(k):
  accuracy = jax.jit(lambda s, l: metrics.top_k_correct(s, l, k).astype(jnp.float32).mean())
  correct = jax.jit(lambda s, l: metrics.top_k_correct(s, l, k))
  scores, labels = jnp.asarray(SCORES, jnp.float32), jnp.asarray(LABELS, jnp.int32)
  np.testing.assert_array_equal(np.asarray(correct(scores, labels)), BY_HAND[k])
  assert float(accuracy(scores, labels)) == pytest.approx(np.mean(BY_HAND[k]))


def test_top_k_inside_shard_map_as_the_train_step_uses_it():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  spec = jax.sharding.PartitionSpec('batch')

  def per_device(scores, labels):
    top1 = metrics.top_k_correct(scores, labels, 1).astype(jnp.float32).mean()
    return jax.lax.pmean(top1, 'batch')

  copies = jax.device_count()
  sharded = jax.sharding.NamedSharding(mesh, spec)
  scores = jax.device_put(np.tile(SCORES, (copies, 1)).astype(np.float32), sharded)
  labels = jax.device_put(np.tile(LABELS, copies).astype(np.int32), sharded)
  step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec), out_specs=jax.sharding.PartitionSpec()))
  assert float(step(scores, labels)) == pytest.approx(np.mean(BY_HAND[1]))


def test_train_and_evaluation_agree_on_the_same_logits():
  # Logits with ties (rows 0, 1, 3) and a NaN row, as a diverging train step would see them. The train step takes
  # top-k of the logits under jit; the evaluation takes it of the softmax probabilities on the host (one view per
  # video, so clip top-1 is this mean).
  logits = np.array([[2., 2., -1., 0.5, 0., 0.],
                     [0., 0., 0., 0., 0., 0.],
                     [-3., 1., 4., 1., 5., 9.],
                     [1., 3., 3., 3., 3., 3.],
                     [np.nan, 0., 1., 0., 0., 0.],
                     [7., 1., 2., 3., 4., 5.]], np.float32)
  labels = np.array([1, 3, 5, 2, 0, 5])
  train = jax.jit(lambda x, y, k: metrics.top_k_correct(x, y, k), static_argnums=2)
  probabilities = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
  for k, by_hand in ((1, [False, False, True, False, False, False]), (5, [True, False, True, True, False, True])):
    in_train = np.asarray(train(jnp.asarray(logits), jnp.asarray(labels), k))
    in_evaluation = metrics.top_k_correct(probabilities, labels, k)
    np.testing.assert_array_equal(in_train, by_hand)
    np.testing.assert_array_equal(in_evaluation, by_hand)
  # The evaluation's clip metrics are the train step's per-view rule, counted over the views it accepts (finite).
  finite = ~np.isnan(logits).any(axis=1)
  batch = {'video_id': np.arange(6)[finite], 'label': labels[finite]}
  result = evaluation.evaluate(lambda b: probabilities[finite], [batch], num_classes=6)
  for k in (1, 5):
    in_train = np.asarray(train(jnp.asarray(logits[finite]), jnp.asarray(labels[finite]), k))
    assert result.metrics[f'clip_top{k}'] == in_train.sum() / finite.sum() == result.metrics[f'video_top{k}']


def test_reported_top_k_leaves_out_what_is_always_right():
  assert metrics.reported_top_k(400) == (1, 5)
  assert metrics.reported_top_k(6) == (1, 5)
  # With 5 classes or fewer every finite row is top-5 correct.
  assert np.all(metrics.top_k_correct(np.random.default_rng(0).random((20, 5)), np.zeros(20, int), 5))
  assert metrics.reported_top_k(5) == metrics.reported_top_k(2) == metrics.reported_top_k(1) == (1,)


def test_confusion_and_per_class_accuracy_break_ties_as_top_1():
  scores = np.array([[.5, .5, 0.], [.5, .5, 0.], [0., .2, .8], [.1, .6, .3]])
  labels = np.array([0, 1, 2, 1])
  # A tied true class loses to the lowest-index other tied class.
  np.testing.assert_array_equal(metrics.predicted_class(scores, labels), [1, 0, 2, 1])
  confusion = metrics.confusion_matrix(scores, labels, num_classes=4)
  np.testing.assert_array_equal(confusion[:3, :3], [[0, 1, 0], [1, 1, 0], [0, 0, 1]])
  assert np.trace(confusion) == metrics.top_k_correct(scores, labels, 1).sum()
  np.testing.assert_array_equal(metrics.per_class_accuracy(confusion), [0., .5, 1., np.nan])
