"""Rejection thresholds: the Clopper-Pearson bound, the certified search and its fallbacks."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from calib.thresholds import (
    RejectionThresholds,
    clopper_pearson_upper,
    fit_rejection_thresholds,
    negative_images_needed,
)


def test_clopper_pearson_known_values():
    assert clopper_pearson_upper(0, 299) == pytest.approx(1 - 0.05 ** (1 / 299), abs=1e-12)
    assert 0.00996 < clopper_pearson_upper(0, 299) <= 0.01 < clopper_pearson_upper(0, 298)
    assert clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(5, 5) == 1.0
    # k=1, n=100: the u with (1-u)^100 + 100 u (1-u)^99 = 0.05
    u = clopper_pearson_upper(1, 100)
    assert (1 - u) ** 100 + 100 * u * (1 - u) ** 99 == pytest.approx(0.05, abs=1e-9)
    assert negative_images_needed(0.01) == 299
    assert negative_images_needed(0.05) == 59
    np.testing.assert_allclose(clopper_pearson_upper([0, 0], [299, 59]), [1 - 0.05 ** (1 / 299), 1 - 0.05 ** (1 / 59)])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2000), st.floats(0.0, 1.0))
def test_clopper_pearson_covers_raw_rate_and_is_monotone(n, frac):
    k = int(frac * n)
    u = clopper_pearson_upper(k, n)
    assert k / n <= u <= 1.0
    if k + 1 <= n:
        assert clopper_pearson_upper(k + 1, n) >= u


def _synthetic(rng, n_neg=2000, c=6, k_neg=6000, k_pos=20000):
    neg_img = rng.integers(0, n_neg, k_neg)
    neg_cls = rng.integers(0, c, k_neg)
    neg_scores = rng.beta(1, 6, k_neg) * (0.5 + neg_cls / (2 * c))  # classes differ
    pos_cls = rng.integers(0, c, k_pos)
    pos_tp = rng.random(k_pos) < 0.5
    pos_scores = np.where(pos_tp, rng.beta(5, 2, k_pos), rng.beta(1, 4, k_pos))
    n_gt = np.bincount(pos_cls[pos_tp], minlength=c) + 10
    return neg_img, neg_scores, neg_cls, n_neg, c, pos_scores, pos_cls, pos_tp, n_gt


def _firing(neg_img, neg_scores, neg_cls, t):
    return np.unique(neg_img[neg_scores > t[neg_cls]]).size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_meets_target_on_fitting_data(seed):
    neg_img, neg_s, neg_c, n, c, ps, pc, ptp, ngt = _synthetic(np.random.default_rng(seed))
    r = fit_rejection_thresholds(neg_img, neg_s, neg_c, n, c, 0.01, 0.95, ps, pc, ptp, ngt)
    k = _firing(neg_img, neg_s, neg_c, r.score_)
    assert r.certified_ and r.method_ == "negative-scenes"
    assert k == r.n_firing_images_ and r.raw_rate_ == pytest.approx(k / n)
    assert clopper_pearson_upper(k, n) <= 0.01 and r.bound_ == pytest.approx(clopper_pearson_upper(k, n))
    # it uses the budget: one more firing image would break the bound
    assert clopper_pearson_upper(k + 2, n) > 0.01
    # recall cost is reported, and thresholds never go below the base
    assert np.all(r.recall_ <= r.base_recall_ + 1e-12) and np.all(r.score_ >= 0.0)
    json.dumps(r.report())


def test_larger_target_gives_thresholds_not_higher():
    neg_img, neg_s, neg_c, n, c, ps, pc, ptp, ngt = _synthetic(np.random.default_rng(5))
    prev = None
    for target in [0.005, 0.01, 0.02, 0.05, 0.2]:
        r = fit_rejection_thresholds(neg_img, neg_s, neg_c, n, c, target, 0.95, ps, pc, ptp, ngt)
        assert r.bound_ <= target
        if prev is not None:
            assert np.all(r.score_ <= prev + 1e-12)
        prev = r.score_


def test_base_threshold_is_a_floor_and_enough_when_it_certifies():
    neg_img, neg_s, neg_c, n, c, ps, pc, ptp, ngt = _synthetic(np.random.default_rng(3))
    r = fit_rejection_thresholds(neg_img, neg_s, neg_c, n, c, 0.01, base_threshold=0.99)
    np.testing.assert_array_equal(r.score_, np.full(c, 0.99))
    assert r.n_firing_images_ == 0 and r.certified_


def test_too_few_negatives():
    rng = np.random.default_rng(0)
    img, cls, s = rng.integers(0, 150, 500), rng.integers(0, 3, 500), rng.random(500)
    r = fit_rejection_thresholds(img, s, cls, 150, 4, 0.01)
    assert not r.certified_ and r.method_ == "zero-firing"
    assert r.needed_negative_images_ == 299 and "299" in r.note
    assert r.bound_ == pytest.approx(1 - 0.05 ** (1 / 150))
    assert r.n_firing_images_ == 0
    for k in range(3):  # just at the highest negative score, not infinite
        assert r.score_[k] == pytest.approx(s[cls == k].max())
    assert r.score_[3] == 0.0  # no negative detections of class 3: the base


def test_no_negatives_uses_f1_on_positives():
    # class 0: TP .9, TP .8, FP .7, TP .6, FP .5 with 4 GT -> best F1 keeps the top 2 or top 4
    # (F1 = 4/6 and 6/8): top 4, threshold .5
    ps = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.4])
    pc = np.array([0, 0, 0, 0, 0, 1, 1])
    ptp = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    r = fit_rejection_thresholds([], [], [], 0, 3, 0.01, pos_scores=ps, pos_classes=pc, pos_is_tp=ptp,
                                 n_gt_per_class=np.array([4, 2, 0]))
    assert not r.certified_ and r.method_ == "f1" and "no negative-scene guarantee" in r.note
    assert r.score_[0] == pytest.approx(0.5)
    assert r.score_[1] == 0.0 and r.score_[2] == 0.0  # no TP / no GT: the base threshold
    art = r.to_artifact()
    assert art["negative_rate"] is None and art["certified"] is False
    json.dumps(art)


def test_artifact_round_trip():
    neg_img, neg_s, neg_c, n, c, ps, pc, ptp, ngt = _synthetic(np.random.default_rng(7))
    r = fit_rejection_thresholds(neg_img, neg_s, neg_c, n, c, 0.02, 0.9, ps, pc, ptp, ngt)
    art = json.loads(json.dumps(r.to_artifact()))
    assert set(art) == {"score", "max_negative_rate", "confidence", "certified_bound", "negative_rate",
                        "certified", "n_negative_images", "note"}
    back = RejectionThresholds.from_artifact(art)
    np.testing.assert_array_equal(back.score_, r.score_)
    assert back.target == 0.02 and back.confidence == 0.9 and back.certified_ == r.certified_
    assert back.bound_ == pytest.approx(r.bound_) and back.n_negative_images == n


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(300, 3000), st.sampled_from([0.01, 0.03]))
def test_property_certified_whenever_possible(seed, n, target):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 4 * n))
    img, cls, s = rng.integers(0, n, k), rng.integers(0, 4, k), rng.random(k)
    r = fit_rejection_thresholds(img, s, cls, n, 4, target)
    fire = _firing(img, s, cls, r.score_)
    assert r.certified_ and clopper_pearson_upper(fire, n) <= target
    assert math.isclose(r.raw_rate_, fire / n)
