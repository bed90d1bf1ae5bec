"""Metrics: AP against an independent reference and pycocotools, calibration errors by hand."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from calib.matching import match_dataset
from calib.metrics import (
    ap_per_class,
    average_precision,
    dece,
    fp_per_negative_image,
    laece0,
    mean_ap,
    negative_image_rate,
    precision_recall,
    summarize,
)
from coco_reference import cocoeval_stats


def _reference_ap(scores, is_tp, n_gt):
    """101-point interpolated AP written from the definition: the mean over r in
    {0, .01, ..., 1} of the best precision among cut-offs whose recall reaches r.
    r and recall compared as the floats pycocotools compares (np.linspace, tp / n_gt)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    tp = fp = 0
    points = []
    for i in order:
        tp += bool(is_tp[i])
        fp += not is_tp[i]
        points.append((tp / n_gt, tp / (tp + fp)))
    total = 0.0
    for r in np.linspace(0.0, 1.0, 101):
        total += max([p for rc, p in points if rc >= r], default=0.0)
    return total / 101


def test_ap_perfect_detector_is_one():
    assert average_precision([0.9, 0.8, 0.3], [True, True, True], 3) == pytest.approx(1.0)
    assert average_precision([0.9, 0.8, 0.3], [True, True, True], 6) == pytest.approx(51 / 101)


def test_ap_hand_example():
    # TP, FP, TP with 2 GT: precision envelope 1 up to recall .5, then 2/3 up to 1
    ap = average_precision([0.9, 0.8, 0.7], [True, False, True], 2)
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert np.isnan(average_precision([0.5], [False], 0))
    assert average_precision([], [], 4) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=40), st.integers(0, 10))
def test_ap_matches_reference(dets, extra_gt):
    scores = [s / 20 for s, _ in dets]
    is_tp = [t for _, t in dets]
    n_gt = sum(is_tp) + extra_gt
    assume(n_gt > 0)
    assert average_precision(scores, is_tp, n_gt) == pytest.approx(_reference_ap(scores, is_tp, n_gt), abs=1e-12)


def test_dece_hand_values():
    assert dece([0.25, 0.25, 0.25, 0.25], [True, False, False, False]) == pytest.approx(0.0)
    # bin [0.9, 1]: mean .95, precision .5 -> .45; bin [0.2, 0.3): mean .25, precision 0 -> .25
    assert dece([0.95, 0.95, 0.25, 0.25], [True, False, False, False]) == pytest.approx(0.5 * 0.45 + 0.5 * 0.25)
    assert dece([1.0], [True]) == pytest.approx(0.0)  # 1.0 falls in the last bin
    assert np.isnan(dece([], []))


def test_dece_perfectly_calibrated_bins():
    rng = np.random.default_rng(0)
    scores, tps = [], []
    for b in range(10):
        p = (b + 0.5) / 10
        n = 20
        scores += [p] * n
        tps += [True] * int(round(p * n)) + [False] * (n - int(round(p * n)))
    assert dece(scores, tps) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        dece([1.5], [True])


def test_laece0_per_class_average():
    # class 0: score .8, accuracy (IoU) .8 -> 0; class 1: score .9, not a TP -> .9
    assert laece0([0.8, 0.9], [0, 1], [0.8, 0.0]) == pytest.approx(0.45)
    # within one bin the mean accuracy counts: scores .55/.55, IoU .9/.2 -> |.55 - .55| = 0
    assert laece0([0.55, 0.55], [3, 3], [0.9, 0.2]) == pytest.approx(0.0)


def _random_dataset(rng, n_img=60, c=5, max_dets=40):
    dets, gts = [], []
    for _ in range(n_img):
        m = int(rng.integers(0, 8)) if rng.random() > 0.2 else 0
        xy = rng.uniform(0, 300, (m, 2))
        gb = np.concatenate([xy, xy + rng.uniform(8, 80, (m, 2))], 1)
        gc = rng.integers(0, c, m)
        k = int(rng.integers(0, max_dets))
        xy = rng.uniform(0, 300, (k, 2))
        db = np.concatenate([xy, xy + rng.uniform(8, 80, (k, 2))], 1)
        dc = rng.integers(0, c, k)
        if m:
            s = rng.random(k) < 0.7
            p = rng.integers(0, m, k)
            db[s] = gb[p[s]] + rng.normal(0, 6, (s.sum(), 4))
            dc[s] = gc[p[s]]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dets.append((db, rng.random(k), dc))
        gts.append((gb, gc))
    return dets, gts


def test_map_equals_reference_per_class():
    rng = np.random.default_rng(1)
    dets, gts = _random_dataset(rng)
    m = match_dataset(dets, gts, 0.5, num_classes=5)
    ap = ap_per_class(m)
    for c in range(5):
        sel = m.classes == c
        assert ap[c] == pytest.approx(_reference_ap(m.scores[sel], m.is_tp[sel], m.n_gt_per_class[c]), abs=1e-12)
    assert mean_ap(m, [0.5]) == pytest.approx(np.mean(ap))


def test_operating_point_metrics():
    dets = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([0.9, 0.4]), np.array([0, 0])),
        (np.array([[0, 0, 10, 10], [5, 5, 9, 9]], float), np.array([0.85, 0.3]), np.array([1, 0])),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)),
    ]
    gts = [(np.array([[0, 0, 10, 10]], float), np.array([0])), (np.zeros((0, 4)), np.zeros(0, int)),
           (np.zeros((0, 4)), np.zeros(0, int))]
    m = match_dataset(dets, gts, 0.5, num_classes=2)
    assert fp_per_negative_image(m, 0.0) == pytest.approx(1.0)  # 2 detections on 2 negative images
    assert negative_image_rate(m, 0.0) == pytest.approx(0.5)
    assert negative_image_rate(m, 0.0, min_score=0.8) == pytest.approx(0.5)
    assert negative_image_rate(m, np.array([0.0, 0.9])) == pytest.approx(0.5)  # the 0.3 of class 0 survives
    assert negative_image_rate(m, np.array([0.35, 0.9])) == 0.0
    pr = precision_recall(m, 0.5)
    assert pr.precision == pytest.approx(0.5) and pr.recall == pytest.approx(1.0)
    s = summarize(m, 0.5, class_names=["a", "b"])
    assert s["ap50"] == pytest.approx(1.0) and s["n_kept"] == 2 and s["negative_image_rate_above_0.8"] == 0.5
    import json

    json.dumps(s)


pycocotools = pytest.importorskip("pycocotools", reason="pycocotools not installed (dev-only)")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_agrees_with_pycocotools(seed):
    rng = np.random.default_rng(seed)
    c = 5
    dets, gts = _random_dataset(rng, n_img=80, c=c, max_dets=60)  # < 100: no maxDets cap
    m = match_dataset(dets, gts, 0.5, num_classes=c)
    stats = cocoeval_stats(dets, gts, c)
    assert mean_ap(m, [0.5]) == pytest.approx(stats[1], abs=1e-3)
    assert mean_ap(m) == pytest.approx(stats[0], abs=1e-3)
