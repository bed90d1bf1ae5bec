"""Reference NMS (calib.nms): the greedy properties, a brute-force oracle, class-awareness, max_keep.

calib.nms computes IoU in float32 (onnxruntime's formula). Boxes here are on an integer grid, so
areas and intersections are exact in float32; pairs whose IoU lies within 1e-5 of the threshold
are excluded (`assume`), so float32 vs float64 division can never flip a decision.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from calib.boxes import box_iou
from calib.nms import batched_nms_xyxy, nms_xyxy

SETTINGS = settings(deadline=None, max_examples=120)
TOL = 1e-5


def normalise(boxes):
    boxes = np.asarray(boxes, np.float64)
    return np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)


def brute_nms(boxes, scores, thr, classes=None):
    """O(n^2) greedy NMS: visit by score desc (ties: lower index first), keep a box unless a kept
    box of its class overlaps it with IoU > thr."""
    boxes = normalise(boxes)
    n = len(boxes)
    classes = np.zeros(n, int) if classes is None else np.asarray(classes)
    iou = box_iou(boxes, boxes)
    keep = []
    for i in sorted(range(n), key=lambda i: (-float(scores[i]), i)):
        if all(not (classes[k] == classes[i] and iou[i, k] > thr) for k in keep):
            keep.append(i)
    return np.asarray(keep, np.int64)


@st.composite
def nms_problem(draw, max_n=30, n_classes=1, allow_inverted=True):
    n = draw(st.integers(0, max_n))
    grid = st.integers(0, 60)
    boxes = []
    for _ in range(n):
        x1, y1 = draw(grid), draw(grid)
        w, h = draw(st.integers(0, 30)), draw(st.integers(0, 30))
        b = [x1, y1, x1 + w, y1 + h]
        if allow_inverted and draw(st.booleans()) and draw(st.booleans()):
            b = [b[2], b[3], b[0], b[1]]                 # corners swapped: the same box for ONNX NMS
        boxes.append(b)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    # few distinct score values so that ties are common
    scores = np.asarray([draw(st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 0.95])) for _ in range(n)], np.float32)
    classes = np.asarray([draw(st.integers(0, n_classes - 1)) for _ in range(n)], np.int64)
    thr = draw(st.sampled_from([0.3, 0.45, 0.5, 0.6, 0.7]))
    iou = box_iou(normalise(boxes), normalise(boxes))
    assume(not np.any(np.abs(iou - thr) < TOL))
    return boxes, scores, classes, thr


def assert_greedy_properties(boxes, scores, classes, thr, keep):
    boxes = normalise(boxes)
    iou = box_iou(boxes, boxes)
    kept = set(keep.tolist())
    assert len(kept) == len(keep), "an index kept twice"
    # kept boxes of one class never overlap more than the threshold
    for a in keep:
        for b in keep:
            if a != b and classes[a] == classes[b]:
                assert iou[a, b] <= thr + TOL
    # every dropped box is explained by a kept box of its class, scoring at least as much
    for i in range(len(boxes)):
        if i not in kept:
            assert any(classes[k] == classes[i] and scores[k] >= scores[i] and iou[i, k] > thr - TOL for k in keep), i
    # output sorted by score, descending
    assert np.all(np.diff(scores[keep].astype(np.float64)) <= 0)


@SETTINGS
@given(nms_problem())
def test_nms_greedy_properties(problem):
    boxes, scores, classes, thr = problem
    keep = nms_xyxy(boxes, scores, thr)
    assert keep.dtype == np.int64
    assert_greedy_properties(boxes, scores, np.zeros(len(boxes), int), thr, keep)


@SETTINGS
@given(nms_problem())
def test_nms_equals_brute_force(problem):
    boxes, scores, _, thr = problem
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, thr), brute_nms(boxes, scores, thr))


@SETTINGS
@given(nms_problem())
def test_nms_idempotent(problem):
    boxes, scores, _, thr = problem
    keep = nms_xyxy(boxes, scores, thr)
    again = nms_xyxy(boxes[keep], scores[keep], thr)
    np.testing.assert_array_equal(again, np.arange(len(keep)))


@SETTINGS
@given(nms_problem(), st.integers(0, 10))
def test_nms_max_keep_is_prefix(problem, k):
    boxes, scores, _, thr = problem
    full = nms_xyxy(boxes, scores, thr)
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, thr, max_keep=k), full[:k])


@SETTINGS
@given(nms_problem(n_classes=3))
def test_batched_nms_equals_brute_force_per_class(problem):
    boxes, scores, classes, thr = problem
    keep = batched_nms_xyxy(boxes, scores, classes, thr)
    np.testing.assert_array_equal(keep, brute_nms(boxes, scores, thr, classes))
    assert_greedy_properties(boxes, scores, classes, thr, keep)


@SETTINGS
@given(nms_problem(n_classes=3), st.integers(0, 10))
def test_batched_nms_max_keep_is_prefix(problem, k):
    boxes, scores, classes, thr = problem
    full = batched_nms_xyxy(boxes, scores, classes, thr)
    np.testing.assert_array_equal(batched_nms_xyxy(boxes, scores, classes, thr, max_keep=k), full[:k])


@SETTINGS
@given(nms_problem(n_classes=1, allow_inverted=False), st.integers(2, 5))
def test_different_classes_never_suppress_each_other(problem, n_classes):
    # every box repeated once per class: each class's result is the single-class NMS
    boxes, scores, _, thr = problem
    n = len(boxes)
    all_boxes = np.tile(boxes, (n_classes, 1))
    all_scores = np.tile(scores, n_classes)
    all_classes = np.repeat(np.arange(n_classes), n)
    keep = batched_nms_xyxy(all_boxes, all_scores, all_classes, thr)
    single = set(nms_xyxy(boxes, scores, thr).tolist())
    for c in range(n_classes):
        got = {int(i) - c * n for i in keep if all_classes[i] == c}
        assert got == single


def test_random_float_boxes_match_brute_force():
    """Real-valued, realistic boxes (the tolerance rule decides the rare near-threshold pair)."""
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(40):
        n = int(rng.integers(1, 200))
        xy = rng.uniform(0, 640, (n, 2))
        wh = rng.uniform(2, 120, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        scores = rng.random(n).astype(np.float32)
        classes = rng.integers(0, 4, n)
        thr = float(rng.choice([0.45, 0.5, 0.65, 0.7]))
        iou = box_iou(boxes.astype(np.float64), boxes.astype(np.float64))
        if np.any(np.abs(iou - thr) < TOL):
            continue
        np.testing.assert_array_equal(nms_xyxy(boxes, scores, thr), brute_nms(boxes, scores, thr))
        np.testing.assert_array_equal(batched_nms_xyxy(boxes, scores, classes, thr),
                                      brute_nms(boxes, scores, thr, classes))
        checked += 1
    assert checked >= 30


def test_suppression_is_strictly_greater_than_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)       # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.49), [0])


def test_ties_keep_input_order():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.5, 0.5, 0.5], np.float32)
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.5), [0])
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 110, 10]], np.float32)
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.5), [0, 1, 2])


def test_zero_area_boxes_never_suppress():
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.1), [0, 1, 2])


def test_identical_boxes_of_different_classes_both_kept():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(batched_nms_xyxy(boxes, scores, np.array([0, 1, 0]), 0.5), [0, 1])


def test_empty_input():
    assert nms_xyxy(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert batched_nms_xyxy(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).shape == (0,)
