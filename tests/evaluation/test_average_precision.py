"""Average precision and mAP: a hand-computed case, scikit-learn, the official rank definition, Charades' rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from nonlocal_jax.evaluation import average_precision as ap
from nonlocal_jax.evaluation import metrics


def _official_ap(scores, positives):
  """Charades_v1_classify.m's AP, written from its definition: the precision at each positive's rank, averaged
  over the positives (ranked by score; ties broken by input order, so only for tie-free scores here)."""
  ranked = positives[np.argsort(-scores, kind='stable')]
  precision_at_rank = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
  return precision_at_rank[ranked].mean()


def test_a_hand_computed_case_with_a_tie():
  scores = np.array([.9, .8, .8, .5, .3])
  positives = np.array([True, False, True, False, True])
  # Thresholds .9: 1 of 1 positive; .8 (the tied pair taken at once): 2 of 3, one new positive; .5: no new
  # positive; .3: 3 of 5, one new positive. AP = (1 + 2/3 + 3/5) / 3 = 34/45.
  assert ap.average_precision(scores, positives) == pytest.approx(34 / 45, abs=1e-15)
  assert average_precision_score(positives, scores) == pytest.approx(34 / 45, abs=1e-15)
  # The tie counts as one threshold whatever the order of the two tied videos (a rank-based AP would not).
  swapped = [0, 2, 1, 3, 4]
  assert ap.average_precision(scores[swapped], positives[swapped]) == ap.average_precision(scores, positives)


def test_matches_scikit_learn_with_ties_and_the_official_definition_without():
  rng = np.random.default_rng(0)
  for trial in range(30):
    n = int(rng.integers(2, 40))
    positives = rng.random(n) < rng.uniform(.05, .9)
    positives[rng.integers(n)] = True
    scores = rng.random(n)
    tied = np.round(scores, 1)  # Many ties.
    assert ap.average_precision(tied, positives) == pytest.approx(average_precision_score(positives, tied),
                                                                  abs=1e-12), trial
    assert ap.average_precision(scores, positives) == pytest.approx(_official_ap(scores, positives), abs=1e-12)


def test_a_class_without_a_positive_has_no_ap_and_stays_out_of_the_mean():
  rng = np.random.default_rng(1)
  scores = rng.random((12, 4))
  labels = (rng.random((12, 4)) < .4).astype(np.int64)
  labels[:, 2] = 0  # The fault: no video of class 2 in the evaluated set.
  labels[:, [0, 1, 3]] |= np.eye(12, 3, dtype=np.int64)[:, [0, 1, 2]]  # Every other class has one.
  per_class = ap.per_class_average_precision(scores, labels)
  assert np.isnan(per_class[2]) and not np.isnan(per_class[[0, 1, 3]]).any()
  keep = labels.any(axis=1)
  reference = [average_precision_score(labels[keep, k], scores[keep, k]) for k in (0, 1, 3)]
  np.testing.assert_allclose(per_class[[0, 1, 3]], reference, atol=1e-12)
  assert ap.mean_average_precision(per_class) == pytest.approx(np.mean(reference), abs=1e-12)
  assert np.isnan(ap.mean_average_precision([np.nan, np.nan]))


def test_videos_without_a_positive_count_as_the_official_minus_infinity_scores():
  rng = np.random.default_rng(2)
  scores = rng.random((20, 5))
  labels = (rng.random((20, 5)) < .3).astype(np.int64)
  labels[:5] = 0  # The fault: five videos without any action, scored high for every class.
  labels[5:10] = np.eye(5, dtype=np.int64)
  scores[:5] += 1.0
  # The official script scores them -inf for every class (no ground-truth row): that is what leaving them out means.
  # (-1, below every other score, ranks as -inf does; scikit-learn refuses infinities.)
  official = scores.copy()
  official[:5] = -1.0
  per_class = ap.per_class_average_precision(scores, labels)
  np.testing.assert_allclose(per_class, [average_precision_score(labels[:, k], official[:, k]) for k in range(5)],
                             atol=1e-12)
  # Kept in as ordinary negatives they would lower every AP: the rule matters here.
  assert all(ap.average_precision(scores[:, k], labels[:, k] > 0) < per_class[k] for k in range(5))


HIT_SCORES = np.array([
    [.9, .5, .1],  # Positive class 0 scores best: hit@1.
    [.5, .5, .1],  # Positive class 1 tied with negative class 0: not hit@1, hit@2.
    [.7, .7, .1],  # Positives 0 and 1 tied: a positive ranks first either way, hit@1.
    [.1, .2, .3],  # Positive class 0 is last: hit@3 only.
    [.3, .2, .1],  # No positive: never a hit.
    [np.nan, .2, .1],  # NaN positive score: never a hit.
])
HIT_LABELS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
HIT_BY_HAND = {1: [True, False, True, False, False, False], 2: [True, True, True, False, False, False],
               3: [True, True, True, True, False, False]}


@pytest.mark.parametrize('k', sorted(HIT_BY_HAND))
def test_hit_at_k_on_the_host_and_under_jit(k):
  np.testing.assert_array_equal(metrics.top_k_hit(HIT_SCORES, HIT_LABELS, k), HIT_BY_HAND[k])
  on_device = jax.jit(lambda s, l: metrics.top_k_hit(s, l, k))(jnp.asarray(HIT_SCORES, jnp.float32),
                                                             jnp.asarray(HIT_LABELS, jnp.float32))
  np.testing.assert_array_equal(np.asarray(on_device), HIT_BY_HAND[k])
