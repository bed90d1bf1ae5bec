"""Letterbox geometry: Ultralytics compatibility, round trips, masking, the resized image itself."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.letterbox import (PAD_LEFT, PAD_TOP, SCALE_X, SCALE_Y, centre_in_content, content_size,
                             input_to_original_xyxy, letterbox_image, letterbox_row, original_to_input_xyxy)

SETTINGS = settings(deadline=None, max_examples=200)
orig_side = st.integers(1, 4000)
input_side = st.sampled_from([32, 64, 96, 128, 160, 256, 320, 384, 416, 480, 512, 608, 640, 736, 960, 1024, 1280])
modes = st.sampled_from(["letterbox", "stretch"])


def ultralytics_letterbox(w, h, new_h, new_w):
    """Ultralytics' LetterBox (auto=False, scaleup=True, center=True), geometry only."""
    r = min(new_h / h, new_w / w)
    new_unpad = int(round(w * r)), int(round(h * r))
    dw, dh = (new_w - new_unpad[0]) / 2, (new_h - new_unpad[1]) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return r, new_unpad, top, bottom, left, right


@pytest.mark.parametrize("w,h,size,scale,pad_left,pad_top", [
    (1280, 720, (640, 640), 0.5, 0, 140),
    (720, 1280, (640, 640), 0.5, 140, 0),
    (640, 480, (640, 640), 1.0, 0, 80),
    (100, 50, (640, 640), 6.4, 0, 160),
    (1280, 720, (384, 640), 0.5, 0, 12),
    (1000, 333, (640, 640), 0.64, 0, 213),
    (640, 640, (640, 640), 1.0, 0, 0),
])
def test_known_ultralytics_cases(w, h, size, scale, pad_left, pad_top):
    row = letterbox_row(w, h, size)
    assert row[SCALE_X] == pytest.approx(scale) and row[SCALE_Y] == pytest.approx(scale)
    assert row[PAD_LEFT] == pad_left and row[PAD_TOP] == pad_top
    assert row[0] == w and row[1] == h


@SETTINGS
@given(orig_side, orig_side, input_side, input_side)
def test_matches_ultralytics_geometry(w, h, in_h, in_w):
    row = letterbox_row(w, h, (in_h, in_w))
    r, (uw, uh), top, bottom, left, right = ultralytics_letterbox(w, h, in_h, in_w)
    assert row[SCALE_X] == row[SCALE_Y] == r
    assert (row[PAD_LEFT], row[PAD_TOP]) == (left, top)
    assert content_size(row) == (uw, uh)
    assert left + uw + right == in_w and top + uh + bottom == in_h


@SETTINGS
@given(orig_side, orig_side, input_side, input_side, modes, st.data())
def test_round_trip_original_input_original_within_1px(w, h, in_h, in_w, mode, data):
    row = letterbox_row(w, h, (in_h, in_w), mode)
    xs = np.asarray(data.draw(st.lists(st.floats(0, w), min_size=2, max_size=2)))
    ys = np.asarray(data.draw(st.lists(st.floats(0, h), min_size=2, max_size=2)))
    box = np.array([[xs.min(), ys.min(), xs.max(), ys.max()]])
    for dtype in (np.float64, np.float32):           # the pipeline works in float32
        inp = original_to_input_xyxy(box.astype(dtype), row.astype(dtype))
        back = input_to_original_xyxy(inp, row.astype(dtype))
        np.testing.assert_allclose(back, box, atol=1.0)
    # the image content lands inside the model input, to within half a pixel of rounding
    inp = original_to_input_xyxy(np.array([[0.0, 0.0, w, h]]), row)[0]
    assert inp[0] >= -1e-9 and inp[1] >= -1e-9
    assert inp[2] <= in_w + 0.5 + 1e-9 and inp[3] <= in_h + 0.5 + 1e-9


@SETTINGS
@given(orig_side, orig_side, input_side, input_side)
def test_stretch_has_no_padding(w, h, in_h, in_w):
    row = letterbox_row(w, h, (in_h, in_w), "stretch")
    assert row[PAD_LEFT] == 0 and row[PAD_TOP] == 0
    assert row[SCALE_X] == pytest.approx(in_w / w) and row[SCALE_Y] == pytest.approx(in_h / h)
    corner = original_to_input_xyxy(np.array([0.0, 0.0, w, h]), row)
    np.testing.assert_allclose(corner, [0, 0, in_w, in_h], rtol=1e-12)


def test_stretch_scales_differ_for_other_aspect():
    row = letterbox_row(1280, 720, (640, 640), "stretch")
    assert row[SCALE_X] == 0.5 and row[SCALE_Y] == pytest.approx(640 / 720)
    assert row[SCALE_X] != row[SCALE_Y]


def test_input_to_original_clips_to_the_image():
    row = letterbox_row(1280, 720, (640, 640))
    boxes = np.array([[-20.0, 100.0, 700.0, 600.0]])     # reaches into both bars and beyond the input
    out = input_to_original_xyxy(boxes, row)
    np.testing.assert_allclose(out, [[0, 0, 1280, 720]])
    # per-image rows broadcast against (B, K, 4)
    rows = np.stack([row, letterbox_row(640, 480, (640, 640))])
    out = input_to_original_xyxy(np.array([[[0, 140, 640, 500]], [[0, 80, 640, 560]]], float), rows[:, None, :])
    np.testing.assert_allclose(out[:, 0], [[0, 0, 1280, 720], [0, 0, 640, 480]])


def test_centre_in_content():
    row = letterbox_row(1280, 720, (640, 640))      # content rows 140..500
    boxes = np.array([
        [100, 0, 140, 100],       # centre y 50: top bar
        [100, 540, 140, 600],     # centre y 570: bottom bar
        [100, 200, 140, 300],     # on the content
        [0, 120, 10, 160],        # centre y 140: the edge, included
        [0, 480, 10, 520],        # centre y 500: the edge, included
        [0, 130, 10, 149],        # centre y 139.5: just outside
        [-50, 200, 10, 300],      # x centre -20: left of the input
    ], float)
    np.testing.assert_array_equal(centre_in_content(boxes, row), [False, False, True, True, True, False, False])
    # stretch: the whole input is content
    srow = letterbox_row(1280, 720, (640, 640), "stretch")
    assert centre_in_content(boxes[:5], srow).all()


@pytest.mark.parametrize("w,h,size,pad", [(200, 100, (128, 128), 114), (60, 150, (96, 128), 0), (128, 128, (128, 128), 114),
                                          (33, 17, (64, 96), 77)])
def test_letterbox_image_shape_content_and_pad(w, h, size, pad):
    img = np.zeros((h, w, 3), np.uint8)
    out, row = letterbox_image(img, size, pad_value=pad)
    assert out.shape == (size[0], size[1], 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(row, letterbox_row(w, h, size))
    cw, ch = content_size(row)
    left, top = int(row[PAD_LEFT]), int(row[PAD_TOP])
    content = np.zeros(out.shape[:2], bool)
    content[top:top + ch, left:left + cw] = True
    assert np.all(out[content] == 0)
    assert np.all(out[~content] == pad)


def test_letterbox_stretch_image_fills_input():
    img = np.full((100, 300, 3), 7, np.uint8)
    out, row = letterbox_image(img, (64, 80), mode="stretch")
    assert out.shape == (64, 80, 3) and np.all(out == 7)
    assert row[SCALE_X] == pytest.approx(80 / 300) and row[SCALE_Y] == pytest.approx(64 / 100)


def test_letterbox_keeps_colours_in_place():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = (255, 0, 0)                 # left half red, right half black
    out, row = letterbox_image(img, (128, 128))
    top = int(row[PAD_TOP])
    assert tuple(out[top + 10, 10]) == (255, 0, 0)
    assert tuple(out[top + 10, 120]) == (0, 0, 0)


def test_bad_input():
    with pytest.raises(ValueError):
        letterbox_row(0, 10, (64, 64))
    with pytest.raises(ValueError):
        letterbox_row(10, 10, (64, 64), "crop")
    with pytest.raises(ValueError):
        letterbox_image(np.zeros((10, 10)), (64, 64))
