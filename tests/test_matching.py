"""Matching: COCO greedy rules, checked against a sequential reference and by properties."""
import numpy as np
from hypothesis import given, settings, strategies as st

from calib.boxes import box_iou
from calib.boxes import box_iou_pairs
from calib.matching import match_dataset, match_image


def _reference(db, ds, dc, gb, gc, t):
    """pycocotools' evaluateImg loop, one detection at a time."""
    gi, io = np.full(len(ds), -1), np.zeros(len(ds))
    ious = box_iou(db, gb)
    used = set()
    for d in np.argsort(-ds, kind="stable"):
        best, best_iou = -1, min(t, 1 - 1e-10)
        for g in range(len(gb)):
            if g in used or gc[g] != dc[d] or ious[d, g] < best_iou or ious[d, g] <= 0:
                continue
            best, best_iou = g, ious[d, g]
        if best >= 0:
            used.add(best)
            gi[d], io[d] = best, ious[d, best]
    return gi, io


def _scene(rng, k, m, c, jitter=3.0):
    gxy = rng.uniform(0, 50, (m, 2))
    gb = np.concatenate([gxy, gxy + rng.uniform(5, 30, (m, 2))], 1)
    gc = rng.integers(0, c, m)
    dxy = rng.uniform(0, 50, (k, 2))
    db = np.concatenate([dxy, dxy + rng.uniform(5, 30, (k, 2))], 1)
    dc = rng.integers(0, c, k)
    if m and k:
        s = rng.random(k) < 0.6
        p = rng.integers(0, m, k)
        db[s] = gb[p[s]] + rng.normal(0, jitter, (s.sum(), 4))
        dc[s] = gc[p[s]]
    ds = np.round(rng.random(k), 1)  # coarse scores: many ties
    return db, ds, dc, gb, gc


seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=150, deadline=None)
@given(seeds, st.integers(0, 25), st.integers(0, 10), st.integers(1, 3), st.sampled_from([0.0, 0.3, 0.5, 0.75]))
def test_equals_sequential_reference(seed, k, m, c, t):
    db, ds, dc, gb, gc = _scene(np.random.default_rng(seed), k, m, c)
    r = match_image(db, ds, dc, gb, gc, t)
    gi, io = _reference(db, ds, dc, gb, gc, t)
    np.testing.assert_array_equal(r.gt_index, gi)
    np.testing.assert_allclose(r.iou, io)
    np.testing.assert_array_equal(r.is_tp, gi >= 0)


@settings(max_examples=100, deadline=None)
@given(seeds, st.integers(0, 30), st.integers(0, 10), st.integers(1, 3))
def test_invariants(seed, k, m, c):
    rng = np.random.default_rng(seed)
    db, ds, dc, gb, gc = _scene(rng, k, m, c)
    r = match_image(db, ds, dc, gb, gc, 0.5)
    used = r.gt_index[r.is_tp]
    assert len(set(used.tolist())) == used.size  # each GT at most once
    assert np.all(gc[used] == dc[r.is_tp])  # never across classes
    assert np.all(r.iou[r.is_tp] >= 0.5) and np.all(r.iou[~r.is_tp] == 0)
    # permuting the ground truth relabels matches but keeps which detections are TP
    perm = rng.permutation(m)
    r2 = match_image(db, ds, dc, gb[perm], gc[perm], 0.5)
    # (exact IoU ties between two boxes could swap partners; random boxes have none)
    np.testing.assert_array_equal(r2.is_tp, r.is_tp)
    np.testing.assert_array_equal(perm[r2.gt_index[r2.is_tp]], r.gt_index[r.is_tp])


def test_identical_box_highest_score_is_tp_and_duplicates_are_fp():
    gb = np.array([[10, 10, 50, 50], [100, 100, 140, 160]], float)
    gc = np.array([0, 1])
    db = np.array([[10, 10, 50, 50], [11, 10, 50, 50], [10, 10, 50, 50], [100, 100, 140, 160]], float)
    ds = np.array([0.9, 0.95, 0.5, 0.7])
    dc = np.array([0, 0, 0, 0])  # the last one sits on a class-1 box
    r = match_image(db, ds, dc, gb, gc)
    # the 0.95 detection comes first and takes the box, even though 0.9 is the exact copy
    np.testing.assert_array_equal(r.is_tp, [False, True, False, False])
    np.testing.assert_array_equal(r.gt_index, [-1, 0, -1, -1])
    r = match_image(db[[0, 2]], np.array([0.6, 0.9]), dc[[0, 2]], gb, gc)
    np.testing.assert_array_equal(r.is_tp, [False, True])  # ties of boxes: the higher score wins
    assert r.iou[1] == 1.0


def test_greedy_takes_highest_iou_free_box():
    gb = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    db = np.array([[1, 0, 11, 10], [2, 0, 12, 10]], float)
    # the first detection overlaps both boxes equally well (IoU 9/11); it takes the later
    # one (pycocotools' tie rule), leaving box 0 for the second, which overlaps it at 8/12
    r = match_image(db, np.array([0.9, 0.8]), np.zeros(2, int), gb, np.zeros(2, int))
    np.testing.assert_array_equal(r.gt_index, [1, 0])
    r = match_image(db, np.array([0.8, 0.9]), np.zeros(2, int), gb, np.zeros(2, int))
    np.testing.assert_array_equal(r.gt_index, [0, 1])  # the second (exact copy) goes first


def test_empty_inputs():
    r = match_image(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])
    assert r.is_tp.shape == (0,)
    r = match_image(np.array([[0, 0, 1, 1.0]]), [0.5], [0], np.zeros((0, 4)), [])
    assert not r.is_tp[0] and r.gt_index[0] == -1


def test_dataset_equals_per_image():
    rng = np.random.default_rng(0)
    dets, gts, per = [], [], []
    for i in range(40):
        m = 0 if i % 5 == 0 else int(rng.integers(0, 8))
        db, ds, dc, gb, gc = _scene(rng, int(rng.integers(0, 20)), m, 3)
        dets.append({"boxes_xyxy": db, "scores": ds, "classes": dc})
        gts.append((gb, gc))
        per.append(match_image(db, ds, dc, gb, gc, 0.5))
    md = match_dataset(dets, gts, 0.5, num_classes=4)
    np.testing.assert_array_equal(md.is_tp, np.concatenate([p.is_tp for p in per]))
    np.testing.assert_allclose(md.iou, np.concatenate([p.iou for p in per]))
    assert md.n_images == 40 and md.num_classes == 4
    np.testing.assert_array_equal(md.negative_image_mask, [len(g[1]) == 0 for g in gts])
    np.testing.assert_array_equal(md.n_gt_per_class, np.bincount(np.concatenate([g[1] for g in gts]), minlength=4))
    # re-matching reuses the pairs and equals matching from scratch
    np.testing.assert_array_equal(md.rematch(0.75).is_tp, match_dataset(dets, gts, 0.75, 4).is_tp)


@settings(max_examples=50, deadline=None)
@given(seeds, st.integers(1, 20))
def test_box_iou_pairs_is_box_iou_diagonal(seed, p):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 20, (p, 4))
    b = rng.uniform(0, 20, (p, 4))
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2] * rng.integers(0, 2, (p, 1))  # some inverted boxes
    np.testing.assert_allclose(box_iou_pairs(a, b), np.diag(box_iou(a, b)))
