"""Bootstrap intervals by image: the point estimates are detcal's metrics, the resamples are
stratified, it is fast, and the intervals cover the truth about as often as they claim."""
import time

import numpy as np
import pytest

from calib.bootstrap import STATISTICS, bootstrap_images, bootstrap_weights, image_features, metric_intervals
from calib.matching import match_dataset
from calib.metrics import dece, negative_image_rate, precision_recall, survives


def _matched(rng, n_pos=60, n_neg=40, c=4):
    dets, gts = [], []
    for i in range(n_pos + n_neg):
        m = 0 if i >= n_pos else int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (m, 2))
        g = np.column_stack([xy, xy + rng.uniform(20, 60, (m, 2))])
        gc = rng.integers(0, c, m)
        k = int(rng.integers(0, 8))
        src = rng.integers(0, max(m, 1), k)
        jitter = rng.normal(0, 8, (k, 4))
        boxes = (g[src] if m else np.tile([[0, 0, 30, 30]], (k, 1))) + jitter
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        cls = np.where(rng.random(k) < 0.8, gc[src] if m else rng.integers(0, c, k), rng.integers(0, c, k))
        dets.append((boxes, rng.uniform(0.01, 1.0, k), cls))
        gts.append((g, gc))
    return match_dataset(dets, gts, 0.5, c)


def test_point_estimates_are_detcals_metrics():
    m = _matched(np.random.default_rng(0))
    thr = np.array([0.2, 0.3, 0.4, 0.5])
    out = metric_intervals(m, thresholds=thr, n_boot=200, statistics=tuple(STATISTICS))
    keep = survives(m.scores, m.classes, thr)
    pr = precision_recall(m, thr)
    assert out["dece"].estimate == pytest.approx(dece(m.scores[keep], m.is_tp[keep]), abs=1e-12)
    assert out["recall"].estimate == pytest.approx(pr.recall, abs=1e-12)
    assert out["precision"].estimate == pytest.approx(pr.precision, abs=1e-12)
    assert out["negative_image_rate"].estimate == pytest.approx(negative_image_rate(m, thr), abs=1e-12)
    for iv in out.values():
        assert iv.low <= iv.high and iv.n_boot == 200


def test_resamples_are_stratified_by_image_kind():
    strata = np.array([0] * 30 + [1] * 12)
    w = bootstrap_weights(strata, 500, np.random.default_rng(1))
    np.testing.assert_array_equal(w[:, :30].sum(1), 30)
    np.testing.assert_array_equal(w[:, 30:].sum(1), 12)
    # with replacement: some images drawn twice, some not at all
    assert (w == 0).any() and (w >= 2).any()
    # each image equally likely: mean count 1
    assert abs(w.mean(0) - 1).max() < 0.2


def test_fast_enough_for_1000_resamples_of_400_images_and_30k_detections():
    rng = np.random.default_rng(2)
    n, k = 400, 30_000
    neg = np.arange(n) >= 300
    img = np.concatenate([rng.integers(0, 300, k - 500), rng.integers(300, n, 500)])
    scores = rng.random(k) * np.where(neg[img], 0.3, 1.0)  # negative images fire about half the time
    gt_img = rng.integers(0, 300, 2000)
    t0 = time.process_time()
    feats = image_features(img, scores, rng.integers(0, 80, k), rng.random(k) < scores, neg, gt_img, 0.25)
    stats = {name: STATISTICS[name](feats.columns) for name in ("dece", "recall", "negative_image_rate")}
    out = bootstrap_images(feats.matrix, stats, neg.astype(int), 1000)
    assert time.process_time() - t0 < 2.0
    assert all(iv.low < iv.high for iv in out.values())
    # ratios of sums: the interval is around the estimate (D-ECE, an absolute value, is biased up)
    assert out["recall"].low < out["recall"].estimate < out["recall"].high
    assert out["negative_image_rate"].low < out["negative_image_rate"].estimate < out["negative_image_rate"].high


def _synthetic_images(rng, n_pos, n_neg):
    """Per image: detections with score s ~ U(0.3, 1), a TP with probability s - 0.2 (so
    every bin is over-confident by 0.2), missed objects ~ Poisson(2); negative images carry
    a detection with probability 0.25."""
    k_pos = rng.poisson(6, n_pos) + 1
    k_neg = (rng.random(n_neg) < 0.25).astype(int)
    counts = np.concatenate([k_pos, k_neg])
    img = np.repeat(np.arange(n_pos + n_neg), counts)
    s = rng.uniform(0.3, 1.0, img.size)
    on_pos = img < n_pos
    tp = on_pos & (rng.random(img.size) < s - 0.2)
    gt_per_img = np.bincount(img[tp], minlength=n_pos + n_neg)[:n_pos] + rng.poisson(2, n_pos)
    gt_img = np.repeat(np.arange(n_pos), gt_per_img)
    neg = np.arange(n_pos + n_neg) >= n_pos
    return img, s, np.zeros(img.size, np.int64), tp, neg, gt_img


def test_intervals_cover_the_true_value_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    # the truth: the same statistics on a very large draw
    big = image_features(*_synthetic_images(rng, 100_000, 60_000))
    truth = {name: float(STATISTICS[name](big.columns)(big.matrix.sum(0, keepdims=True))[0])
             for name in ("dece", "recall", "negative_image_rate")}
    reps, hits = 200, {name: 0 for name in truth}
    for r in range(reps):
        f = image_features(*_synthetic_images(rng, 120, 80))
        ivs = bootstrap_images(f.matrix, {name: STATISTICS[name](f.columns) for name in truth},
                               f.negative_image_mask.astype(int), 400, seed=r)
        for name, iv in ivs.items():
            hits[name] += iv.low <= truth[name] <= iv.high
    for name, h in hits.items():
        # 95% nominal; binomial noise over 200 repetitions is +-3 points, plus the percentile
        # method's own small-sample error
        assert 0.88 * reps <= h <= 0.99 * reps, f"{name}: covered {h} of {reps}"


def test_bad_input():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_images(np.ones((3, 1)), lambda x: x[:, 0], confidence=1.5)
    with pytest.raises(ValueError, match="strata"):
        bootstrap_images(np.ones((3, 1)), lambda x: x[:, 0], strata=np.zeros(4))


def test_interval_table_and_dict():
    m = _matched(np.random.default_rng(4))
    ivs = metric_intervals(m, thresholds=0.3, n_boot=100)
    from calib.bootstrap import format_interval_rows, intervals_to_dict

    d = intervals_to_dict(ivs)
    assert set(d) == {"dece", "recall", "negative_image_rate"} and d["recall"]["n_boot"] == 100
    text = format_interval_rows([("raw", ivs), ("patched", d)])
    lines = text.splitlines()
    assert lines[0].startswith("95% bootstrap interval") and len(lines) == 4
    assert f"{d['recall']['estimate']:.3f} [{d['recall']['low']:.3f}, {d['recall']['high']:.3f}]" in lines[2]
    assert "n/a" in format_interval_rows([("x", {})])
