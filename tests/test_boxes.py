"""Box geometry: IoU properties, format round trips, clipping."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from calib.boxes import (box_area, box_iou, box_iou_pairs, clip_boxes_xyxy, cxcywh_to_xyxy,
                         xyxy_to_cxcywh)

coord = st.floats(-1000, 1000, allow_nan=False, allow_infinity=False)
side = st.floats(0.5, 500, allow_nan=False, allow_infinity=False)


@st.composite
def box_xyxy(draw, min_side=side):
    x, y = draw(coord), draw(coord)
    return np.array([x, y, x + draw(min_side), y + draw(min_side)], dtype=np.float64)


@st.composite
def box_sets(draw, max_n=8):
    n = draw(st.integers(1, max_n))
    return np.stack([draw(box_xyxy()) for _ in range(n)])


SETTINGS = settings(deadline=None, max_examples=150)


@SETTINGS
@given(box_sets(), box_sets())
def test_iou_symmetric_and_bounded(a, b):
    iou = box_iou(a, b)
    assert iou.shape == (len(a), len(b))
    assert np.all((iou >= 0) & (iou <= 1))
    np.testing.assert_allclose(iou, box_iou(b, a).T, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(box_sets())
def test_iou_with_itself_is_one(a):
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0, rtol=1e-9)
    np.testing.assert_allclose(box_iou_pairs(a, a), 1.0, rtol=1e-9)


@SETTINGS
@given(box_sets(), box_sets(), coord, coord, st.floats(0.1, 10))
def test_iou_invariant_to_translation_and_uniform_scale(a, b, dx, dy, s):
    shift = np.array([dx, dy, dx, dy])
    ref = box_iou(a, b)
    np.testing.assert_allclose(box_iou(a + shift, b + shift), ref, atol=1e-6)
    np.testing.assert_allclose(box_iou(a * s, b * s), ref, atol=1e-6)


@SETTINGS
@given(box_sets(), box_sets())
def test_iou_pairs_equals_diagonal(a, b):
    n = min(len(a), len(b))
    np.testing.assert_allclose(box_iou_pairs(a[:n], b[:n]), np.diag(box_iou(a[:n], b[:n])), atol=1e-12)


@SETTINGS
@given(box_xyxy(), box_xyxy(), st.floats(0, 100))
def test_iou_zero_for_disjoint_boxes(a, b, gap):
    # put b strictly to the right of a (or touching it: still no overlap area)
    b = b - np.array([b[0], 0, b[0], 0]) + np.array([a[2] + gap, 0, a[2] + gap, 0])
    assert box_iou(a[None], b[None])[0, 0] == 0.0
    assert box_iou_pairs(a[None], b[None])[0] == 0.0


@SETTINGS
@given(box_xyxy(), box_sets(), st.sampled_from(["point", "hline", "vline", "inverted"]))
def test_zero_area_box_has_iou_zero_with_everything(a, others, kind):
    x, y = a[0], a[1]
    z = {"point": [x, y, x, y], "hline": [x, y, x + 10, y], "vline": [x, y, x, y + 10],
         "inverted": [x + 5, y + 5, x, y]}[kind]
    z = np.array([z], dtype=np.float64)
    assert box_area(z)[0] == 0
    assert np.all(box_iou(z, others) == 0)
    assert np.all(box_iou(others, z) == 0)
    assert box_iou(z, z)[0, 0] == 0
    assert box_iou_pairs(z, z)[0] == 0


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 5, 5], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b)[0], [50 / 150, 25 / 100, 0.0])


def test_iou_empty_inputs():
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert box_iou_pairs(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


@SETTINGS
@given(box_sets())
def test_cxcywh_xyxy_round_trip(a):
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(a)), a, atol=1e-9)
    c = xyxy_to_cxcywh(a)
    np.testing.assert_allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(c)), c, atol=1e-9)


def test_cxcywh_known_and_dtype():
    c = np.array([[10, 20, 4, 6]], np.float32)
    x = cxcywh_to_xyxy(c)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[8, 17, 12, 23]])
    # works on any leading shape
    assert cxcywh_to_xyxy(np.zeros((2, 3, 4))).shape == (2, 3, 4)


@SETTINGS
@given(box_sets(), st.floats(1, 2000), st.floats(1, 2000))
def test_clip_stays_inside_and_is_idempotent(a, w, h):
    c = clip_boxes_xyxy(a, w, h)
    assert np.all((c[:, [0, 2]] >= 0) & (c[:, [0, 2]] <= w))
    assert np.all((c[:, [1, 3]] >= 0) & (c[:, [1, 3]] <= h))
    np.testing.assert_array_equal(clip_boxes_xyxy(c, w, h), c)
    inside = (a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 2] <= w) & (a[:, 3] <= h)
    np.testing.assert_array_equal(c[inside], a[inside])


def test_clip_per_row_sizes():
    boxes = np.array([[[-5, -5, 50, 50]], [[-5, -5, 50, 50]]], float)   # (2, 1, 4)
    out = clip_boxes_xyxy(boxes, np.array([[10], [40]]), np.array([[20], [30]]))
    np.testing.assert_array_equal(out[:, 0], [[0, 0, 10, 20], [0, 0, 40, 30]])
