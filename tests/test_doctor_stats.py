"""Like-with-like statistics: intervals contain "no shift" when there is none and exclude it when there is one."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.doctor.stats import (SIZE_BUCKETS, bootstrap_weights, gt_buckets, gt_hits, located_pairs, median_shift,
                                paired_dece_difference, paired_mean_difference, paired_recall_difference,
                                recall_by_group, size_bucket, size_shift, weighted_dece_rows, weighted_median_rows)
from calib.metrics import dece
from calib.matching import match_dataset
from calib.pipeline import Detections


def scenes(n_images: int, seed: int, *, scale: float = 1.0, miss_small: bool = False, jitter: float = 0.03):
    """Synthetic images with labelled boxes of all sizes and a 'model' that finds them.

    Predictions are the labels scaled about their centre by `scale` (times a per-box jitter);
    `miss_small` drops every prediction whose label is under 32^2 px (the selection effect of a
    small model: it misses small objects but sizes the others right).
    Returns (detections per image, gt boxes per image, gt classes per image).
    """
    rng = np.random.default_rng(seed)
    dets, gts, gcs = [], [], []
    for _ in range(n_images):
        k = int(rng.integers(2, 6))
        side = np.exp(rng.uniform(np.log(8), np.log(200), k))
        aspect = np.exp(rng.uniform(-0.5, 0.5, k))
        w, h = side * aspect, side / aspect
        cx, cy = rng.uniform(100, 540, k), rng.uniform(100, 380, k)
        gt = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        f = scale * np.exp(rng.normal(0, jitter, k))
        pw, ph = w * f, h * f
        pred = np.stack([cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2], 1)
        keep = ~(miss_small & (w * h < 32 ** 2))
        cls = rng.integers(0, 2, k)
        dets.append(Detections(pred[keep].astype(np.float32), rng.uniform(0.5, 0.99, int(keep.sum())).astype(np.float32),
                               cls[keep].astype(np.int64)))
        gts.append(gt)
        gcs.append(cls.astype(np.int64))
    return dets, gts, gcs


def matched_of(dets, gts, gcs):
    return match_dataset([(d.boxes_xyxy, d.scores, d.classes) for d in dets], list(zip(gts, gcs)), 0.5, 2)


# ------------------------------------------------------------------------------- helpers

def test_size_buckets_follow_coco_edges():
    assert size_bucket(np.array([0, 32 ** 2 - 1, 32 ** 2, 96 ** 2 - 1, 96 ** 2, 1e9])).tolist() == [0, 0, 1, 1, 2, 2]
    assert SIZE_BUCKETS == ("small", "medium", "large")


def test_bootstrap_weights_resample_images():
    w = bootstrap_weights(7, 50, seed=1)
    assert w.shape == (50, 7) and np.all(w.sum(axis=1) == 7) and np.all(w >= 0)
    assert not np.all(w == 1)   # it does resample


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=41).filter(lambda v: len(v) % 2 == 1))
def test_weighted_median_with_unit_weights_is_the_median(values):
    v = np.asarray(values)
    assert weighted_median_rows(v, np.ones((1, len(v))))[0] == pytest.approx(np.median(v))


def test_weighted_median_counts_repeats():
    # value 5 drawn three times outweighs 1 and 2 drawn once
    assert weighted_median_rows(np.array([1.0, 2.0, 5.0]), np.array([[1.0, 1.0, 3.0]]))[0] == 5.0
    assert np.isnan(weighted_median_rows(np.array([1.0]), np.zeros((1, 1))))[0]


# ----------------------------------------------------------------------------- size shift

def test_no_size_shift_interval_contains_zero():
    dets, gts, gcs = scenes(60, seed=0)
    est = size_shift(dets, gts, matched_of(dets, gts, gcs), n_boot=400)["log_size"]
    assert est.n > 100 and est.low <= 0.0 <= est.high and not est.excludes(0.0)


def test_real_size_shift_is_supported():
    dets, gts, gcs = scenes(60, seed=1, scale=1.12)
    est = size_shift(dets, gts, matched_of(dets, gts, gcs), n_boot=400)["log_size"]
    assert est.excludes(0.0) and est.low > 0
    assert np.exp(est.value) == pytest.approx(1.12, abs=0.03)


def test_selection_effect_is_not_a_size_shift():
    # the model misses small objects: all its boxes are larger than the average label, but the
    # boxes it does find are sized right. The matched-pair statistic sees no shift.
    dets, gts, gcs = scenes(60, seed=2, miss_small=True)
    pred = np.concatenate([d.boxes_xyxy for d in dets])
    gt = np.concatenate(gts)
    sz = lambda b: np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))   # noqa: E731
    assert np.median(sz(pred)) / np.median(sz(gt)) > 1.3      # what the old check compared
    est = size_shift(dets, gts, matched_of(dets, gts, gcs), n_boot=400)["log_size"]
    assert not est.excludes(0.0)


def test_median_shift_empty_is_nan():
    est = median_shift(np.zeros(0), np.zeros(0, np.int64), 5)
    assert np.isnan(est.value) and not est.excludes(0.0) and est.to_dict()["value"] is None


# --------------------------------------------------------------------------- recall by bucket

def test_recall_by_bucket_and_paired_difference():
    dets, gts, gcs = scenes(80, seed=3)
    dets_small_missed = [Detections(d.boxes_xyxy[keep], d.scores[keep], d.classes[keep])
                         for d, keep in ((d, (d.boxes_xyxy[:, 2] - d.boxes_xyxy[:, 0]) * (d.boxes_xyxy[:, 3] - d.boxes_xyxy[:, 1]) >= 32 ** 2)
                                         for d in dets)]
    m_a, m_b = matched_of(dets, gts, gcs), matched_of(dets_small_missed, gts, gcs)
    hits_a, hits_b = gt_hits(m_a, 0.25), gt_hits(m_b, 0.25)
    buckets = gt_buckets(gts)
    rec = recall_by_group(hits_a, m_a.gt_image_index, buckets, 3, m_a.n_images, n_boot=300)
    assert all(r.value == pytest.approx(1.0, abs=0.02) for r in rec)
    assert sum(r.n for r in rec) == len(buckets)
    same = paired_recall_difference(hits_a, hits_a, m_a.gt_image_index, buckets, 3, m_a.n_images, n_boot=300)
    assert all(d.value == 0 and d.low == 0 and d.high == 0 and not d.excludes(0.0) for d in same)
    diff = paired_recall_difference(hits_a, hits_b, m_a.gt_image_index, buckets, 3, m_a.n_images, n_boot=300)
    assert diff[0].excludes(0.0) and diff[0].low > 0.5          # small objects lost
    assert not diff[2].excludes(0.0)                           # large ones untouched


def test_gt_hits_respects_the_threshold():
    dets, gts, gcs = scenes(10, seed=4)
    m = matched_of(dets, gts, gcs)
    assert gt_hits(m, 0.0).mean() > 0.9 and not gt_hits(m, 0.999).any()


def test_small_noisy_difference_is_not_supported():
    rng = np.random.default_rng(5)
    n_img, per = 30, 3
    img = np.repeat(np.arange(n_img), per)
    a = rng.random(n_img * per) < 0.8
    b = a.copy()
    flip = rng.choice(len(b), 2, replace=False)   # two boxes change, one each way
    b[flip[0]], b[flip[1]] = not a[flip[0]], not a[flip[1]]
    d = paired_recall_difference(a, b, img, np.zeros(len(a), np.int64), 1, n_img, n_boot=500)[0]
    assert abs(d.value) <= 2 / len(a) and not d.excludes(0.0)


# ------------------------------------------------------------------------ located pairs

def test_located_pairs_see_a_size_bias_too_large_for_matching():
    dets, gts, gcs = scenes(40, seed=6, scale=2.2)     # IoU of a 2.2x box with its object: 0.2, never matched
    m = matched_of(dets, gts, gcs)
    assert m.is_tp.mean() < 0.1
    img, ls, la = located_pairs(dets, gts, gcs, 0.25)
    est = median_shift(ls, img, len(gts), n_boot=300)
    assert est.n == sum(len(g) for g in gts) and np.exp(est.value) == pytest.approx(2.2, rel=0.05) and est.low > 0
    assert abs(np.median(la)) < 0.05


def test_located_pairs_ignore_missed_objects_and_other_classes():
    dets, gts, gcs = scenes(40, seed=7, miss_small=True)
    img, ls, _ = located_pairs(dets, gts, gcs, 0.25)
    est = median_shift(ls, img, len(gts), n_boot=300)
    assert abs(est.value) < np.log(1.05) and est.low > -np.log(1.05) and est.high < np.log(1.05)   # no practical shift
    wrong = [Detections(d.boxes_xyxy, d.scores, 1 - d.classes) for d in dets]
    assert located_pairs(wrong, gts, gcs, 0.25)[0].size < len(img)


# ------------------------------------------------------------------- paired per-image statistics

def test_paired_mean_difference():
    rng = np.random.default_rng(8)
    a = rng.poisson(0.5, 100).astype(float)
    same = paired_mean_difference(a, a, n_boot=300)
    assert same.value == 0 and same.low == 0 and same.high == 0
    more = paired_mean_difference(a + rng.poisson(0.8, 100), a, n_boot=300)
    assert more.excludes(0.0) and more.low > 0.4
    noisy = paired_mean_difference(rng.poisson(0.5, 100).astype(float), rng.poisson(0.5, 100).astype(float), n_boot=300)
    assert not noisy.excludes(0.0)


def test_weighted_dece_matches_dece_and_counts_repeats():
    rng = np.random.default_rng(9)
    s = rng.random(50)
    tp = rng.random(50) < s
    assert weighted_dece_rows(s, tp, np.ones((1, 50)))[0] == pytest.approx(dece(s, tp))
    w = rng.integers(0, 3, 50).astype(float)
    idx = np.repeat(np.arange(50), w.astype(int))
    assert weighted_dece_rows(s, tp, w[None])[0] == pytest.approx(dece(s[idx], tp[idx]))


def test_paired_dece_difference():
    rng = np.random.default_rng(10)
    n_img = 60
    img = rng.integers(0, n_img, 600)
    s = rng.uniform(0.3, 1.0, 600)
    tp = rng.random(600) < s                           # calibrated
    same = paired_dece_difference((s, tp, img), (s, tp, img), n_img, n_boot=300)
    assert same.value == 0 and not same.excludes(0.0)
    over = np.minimum(s + 0.25, 1.0)                   # over-confident by 0.25
    worse = paired_dece_difference((over, tp, img), (s, tp, img), n_img, n_boot=300)
    assert worse.excludes(0.0) and worse.low > 0.05
