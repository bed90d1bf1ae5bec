"""Out-of-sample certification: the family, the fixed-sequence test, the split, the edge
cases, the global baseline and the per-class vs global choice."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from calib.certify import (
    CertifiedThresholds,
    ScoredImages,
    first_firing_row,
    fixed_sequence,
    global_baseline,
    threshold_family,
)
from calib.thresholds import RejectionThresholds, clopper_pearson_upper


def _data(rng, n_neg=400, n_pos=120, c=6, hot=(0,), neg_rate=0.05, hot_rate=0.4):
    """Negative images where the `hot` classes fire often and high, the others rarely; positive
    images with TPs (score ~ Beta(5, 2)) and FPs."""
    img, s, cl, tp = [], [], [], []
    for i in range(n_neg):
        for k in range(c):
            p = hot_rate if k in hot else neg_rate
            if rng.random() < p:
                img.append(i), cl.append(k), tp.append(False)
                s.append(rng.beta(4, 3) if k in hot else rng.beta(1, 5))
    gi, gc = [], []
    for i in range(n_neg, n_neg + n_pos):
        for _ in range(3):
            k = int(rng.integers(0, c))
            gi.append(i), gc.append(k)
            if rng.random() < 0.8:
                img.append(i), cl.append(k), tp.append(True), s.append(rng.beta(5, 2))
            img.append(i), cl.append(int(rng.integers(0, c))), tp.append(False), s.append(rng.beta(1, 4))
    mask = np.arange(n_neg + n_pos) < n_neg
    return ScoredImages(np.array(img), np.array(s), np.array(cl), np.array(tp), mask, np.array(gi), np.array(gc), c)


def _rate(data, t):
    img, s, cl, n = data.negatives()
    return np.unique(img[s > t[cl]]).size / n


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["per-class", "global"]), st.floats(0.0, 0.5))
def test_family_is_monotone_from_nothing_to_the_base(seed, shape, base_level):
    rng = np.random.default_rng(seed)
    c = 5
    base = np.full(c, base_level) + rng.uniform(0, 0.1, c)
    k = int(rng.integers(0, 60))
    shape_neg = (rng.integers(0, 30, k), rng.random(k), rng.integers(0, c, k), 30)
    fam = threshold_family(shape, base, rng.random(40), rng.integers(0, c, 40), 50, shape_neg, 10)
    np.testing.assert_array_equal(fam[0], 1.0)
    np.testing.assert_allclose(fam[-1], base)
    assert np.all(np.diff(fam, axis=0) <= 0)
    assert np.all(np.any(np.diff(fam, axis=0) < 0, axis=1))  # no repeated member


def test_first_firing_row_and_fixed_sequence_match_brute_force():
    rng = np.random.default_rng(1)
    c, n = 4, 150
    fam = np.sort(rng.random((30, c)), axis=0)[::-1]
    fam[0] = 1.0
    k = 300
    img, s, cl = rng.integers(0, n, k), rng.random(k), rng.integers(0, c, k)
    first = first_firing_row(fam, img, s, cl, n)
    for j in range(fam.shape[0]):
        fires = np.unique(img[s > fam[j][cl]])
        np.testing.assert_array_equal(np.flatnonzero(first <= j), fires)
    target, conf = 0.05, 0.9
    chosen, k_chosen, p = fixed_sequence(first, fam.shape[0], target, conf)
    # brute force: walk the family from the strict end while the Clopper-Pearson bound certifies
    j = -1
    while j + 1 < fam.shape[0] and clopper_pearson_upper((first <= j + 1).sum(), n, conf) <= target:
        j += 1
    assert chosen == j and k_chosen == (first <= j).sum()
    assert np.all(p[:-1] <= 1 - conf) and (p[-1] > 1 - conf or chosen == fam.shape[0] - 1)


@pytest.mark.parametrize("target, n_cert", [(0.01, 299), (0.03, 200)])
def test_split_sizes_keep_enough_images_to_certify(target, n_cert):
    data = _data(np.random.default_rng(2), n_neg=400, neg_rate=0.002, hot_rate=0.01)
    r = CertifiedThresholds(target, 0.95, shape="per-class").fit(data)
    assert r.n_certification_images_ == n_cert and r.n_shape_images_ == 400 - n_cert
    assert r.certified_ and r.bound_ <= target
    assert r.bound_ == pytest.approx(clopper_pearson_upper(r.n_firing_, n_cert, 0.95))
    g = CertifiedThresholds(target, 0.95, shape="global").fit(data)
    assert g.n_certification_images_ == 400 and g.n_shape_images_ == 0
    assert np.all(g.score_ == g.score_[0])


def test_result_reports_the_procedure_and_reads_back_as_an_artifact():
    data = _data(np.random.default_rng(3))
    r = CertifiedThresholds(0.05, 0.95, seed=4, shape="per-class").fit(data, base_threshold=0.1)
    d = r.to_dict()
    for key in ("procedure", "n_shape_images", "n_certification_images", "certified_bound", "empirical_rate",
                "lambda", "score", "baseline"):
        assert key in d
    assert "Learn-then-Test" in d["procedure"] and str(r.n_certification_images_) in d["procedure"]
    assert 0.0 <= d["lambda"] <= 1.0 and np.all(r.score_ >= 0.1)
    back = RejectionThresholds.from_artifact(r.to_artifact())
    np.testing.assert_array_equal(back.score_, r.score_)
    assert back.certified_ and back.bound_ == pytest.approx(r.bound_)
    # the baseline: the lowest single threshold at the same rate on the same images
    b = r.baseline_
    assert b["negative_rate"] <= _rate(data, r.score_) + 1e-12
    assert _rate(data, np.full(6, b["threshold"] - 1e-9)) > _rate(data, r.score_)


def test_seed_changes_the_split_not_the_validity():
    data = _data(np.random.default_rng(5))
    a = CertifiedThresholds(0.05, 0.95, seed=0, shape="per-class").fit(data)
    b = CertifiedThresholds(0.05, 0.95, seed=1, shape="per-class").fit(data)
    assert a.certified_ and b.certified_
    assert not np.array_equal(a.score_, b.score_)


def test_no_negative_images_keeps_the_base_and_says_so():
    data = _data(np.random.default_rng(6))
    pos = data.subset(~data.negative_image_mask)
    r = CertifiedThresholds(0.01).fit(pos, base_threshold=0.25)
    assert not r.certified_ and r.bound_ == 1.0
    np.testing.assert_array_equal(r.score_, 0.25)
    assert "no negative images" in r.note
    assert r.to_dict()["certified_bound"] == 1.0


def test_too_few_negative_images_falls_back_to_zero_firing_uncertified():
    data = _data(np.random.default_rng(7), n_neg=100)
    r = CertifiedThresholds(0.01).fit(data)
    assert not r.certified_ and "too few negative images" in r.note and "299" in r.note
    assert _rate(data, r.score_) == 0.0
    assert r.bound_ == pytest.approx(clopper_pearson_upper(0, 100))


def test_classes_that_never_fire_stay_at_the_base():
    data = _data(np.random.default_rng(8), c=6, neg_rate=0.0, hot=(0,), hot_rate=0.3)
    r = CertifiedThresholds(0.05, 0.95, shape="per-class").fit(data, base_threshold=0.05)
    np.testing.assert_allclose(r.score_[1:], 0.05)
    assert r.score_[0] > 0.05 and r.certified_


def test_per_class_beats_global_when_one_class_is_hot_and_auto_keeps_it():
    data = _data(np.random.default_rng(9), hot=(0,), hot_rate=0.5, neg_rate=0.01)
    r = CertifiedThresholds(0.05, 0.95, shape="auto").fit(data)
    cmp_ = r.comparison_
    assert cmp_["per-class"]["recall"] > cmp_["global"]["recall"] + 0.01
    assert cmp_["winner"] == "per-class" and r.shape_used_ == "per-class"


def test_auto_falls_back_to_global_when_per_class_loses():
    # every class alike: the global family certifies on twice the images and wins
    data = _data(np.random.default_rng(10), n_neg=240, hot=(), neg_rate=0.03)
    r = CertifiedThresholds(0.05, 0.95, shape="auto", max_recall_loss=0.0).fit(data)
    cmp_ = r.comparison_
    rp, rg = cmp_["per-class"]["recall"], cmp_["global"]["recall"]
    assert (cmp_["winner"] == "global") == (rp < rg)
    assert rp < rg, (rp, rg)
    assert r.shape_used_ == "global" and np.all(r.score_ == r.score_[0])


def test_global_baseline_recall():
    data = _data(np.random.default_rng(11))
    b = global_baseline(data, 0.0)
    img, s, cl, n = data.negatives()
    assert b["threshold"] == pytest.approx(s.max()) and b["negative_rate"] == 0.0
    tp_s, _, n_gt = data.true_positive_scores()
    assert b["recall"] == pytest.approx((tp_s > s.max()).sum() / n_gt)
    assert math.isclose(global_baseline(data, 1.0)["threshold"], 0.0)


def test_bad_parameters():
    data = _data(np.random.default_rng(12), n_neg=10, n_pos=5)
    with pytest.raises(ValueError, match="max_negative_rate"):
        CertifiedThresholds(1.5).fit(data)
    with pytest.raises(ValueError, match="shape"):
        CertifiedThresholds(0.01, shape="square").fit(data)


def test_auto_is_certified_at_half_the_error_level_or_decides_on_the_count_alone():
    # enough negative images for both levels: the shape chosen is certified at 97.5%
    data = _data(np.random.default_rng(13), n_neg=400)
    r = CertifiedThresholds(0.05, 0.95, shape="auto").fit(data)
    assert r.certification_confidence_ == pytest.approx(0.975) and "Bonferroni" in r.procedure_
    assert r.bound_ == pytest.approx(clopper_pearson_upper(r.n_firing_, r.n_certification_images_, 0.975))
    # 65 negative images certify 5% at 95% (59 needed) but not at 97.5% (72): global, at 95%, no comparison
    small = _data(np.random.default_rng(14), n_neg=65, neg_rate=0.0005, hot_rate=0.001)
    s = CertifiedThresholds(0.05, 0.95, shape="auto").fit(small)
    assert s.shape_used_ == "global" and s.certification_confidence_ == 0.95 and s.certified_
    assert "72" in s.comparison_["reason"] and "per-class" not in s.comparison_


def test_report_and_summary_lines():
    from calib.certify import certify_matched
    from calib.matching import match_dataset

    rng = np.random.default_rng(15)
    dets, gts = [], []
    for i in range(400):
        if i < 100:
            g = np.array([[10.0, 10, 50, 50]])
            dets.append((g + rng.normal(0, 2, (1, 4)), rng.uniform(0.3, 1, 1), np.array([i % 3])))
            gts.append((g, np.array([i % 3])))
        else:
            k = int(rng.random() < 0.2)
            dets.append((np.tile([[0.0, 0, 20, 20]], (k, 1)), rng.beta(1, 4, k), rng.integers(0, 3, k)))
            gts.append((np.zeros((0, 4)), np.zeros(0, np.int64)))
    m = match_dataset(dets, gts, 0.5, 3)
    r = certify_matched(m, max_negative_rate=0.05, confidence=0.95)
    rep = r.report(["a", "b", "c"])
    assert set(rep["per_class"]) == {"a", "b", "c"} and rep["per_class"]["a"]["threshold"] == r.score_[0]
    lines = r.summary_lines()
    assert lines[0].startswith("thresholds: certified out of sample")
    assert any("best single global threshold" in ln for ln in lines)
    assert any(ln.startswith("  shape: ") for ln in lines)


def test_auto_with_too_few_negatives_keeps_the_per_class_fallback():
    data = _data(np.random.default_rng(16), n_neg=30)
    r = CertifiedThresholds(0.05, 0.95).fit(data)
    assert not r.certified_ and r.shape_used_ == "per-class" and "cannot certify" in r.comparison_["reason"]
    assert _rate(data, r.score_) == 0.0 and len(np.unique(r.score_)) > 1
