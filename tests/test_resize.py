"""calib.resize, the one resize definition: against onnxruntime's Resize, Ultralytics' geometry,
the letterbox row of calib.letterbox and calib.preprocess's pixel scaling."""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from calib import resize as R
from calib.letterbox import PAD_LEFT, PAD_TOP, SCALE_X, SCALE_Y, letterbox_row
from calib.preprocess import Preprocess, to_input_tensor

SETTINGS = settings(deadline=None, max_examples=60)
side = st.integers(1, 300)
input_side = st.sampled_from([8, 32, 64, 96, 128, 160, 320, 416, 640])
placements = st.sampled_from(R.PLACEMENTS)


@functools.lru_cache(maxsize=None)
def _ort_resize(opset: int = 18) -> ort.InferenceSession:
    """One ONNX Resize node: x float32 [1, C, h, w], sizes int64 [4] -> y."""
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode=R.COORDINATE_TRANSFORMATION_MODE)
    graph = helper.make_graph(
        [node], "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, None, None]),
         helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_resize(image_hwc: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    x = image_hwc.astype(np.float32).transpose(2, 0, 1)[None]
    y = _ort_resize().run(None, {"x": x, "sizes": np.array([1, x.shape[1], out_h, out_w], np.int64)})[0]
    return y[0].transpose(1, 2, 0)


@SETTINGS
@given(side, side, st.integers(1, 200), st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_resize_linear_equals_onnxruntime_resize(h, w, out_h, out_w, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = R.resize_linear(img, out_h, out_w)
    theirs = ort_resize(img, out_h, out_w)
    assert ours.shape == theirs.shape == (out_h, out_w, 3) and ours.dtype == np.float32
    # required: <= 1 grey level; both stay float, so they agree to float32 rounding
    assert np.abs(ours - theirs).max() <= 1e-2


@SETTINGS
@given(side, side, st.integers(1, 200), st.integers(1, 200), st.integers(0, 255))
def test_resize_of_a_flat_image_is_flat_and_stays_in_range(h, w, out_h, out_w, value):
    img = np.full((h, w, 3), value, np.uint8)
    out = R.resize_linear(img, out_h, out_w)
    assert np.abs(out - value).max() <= 1e-3
    noisy = R.resize_linear(np.random.default_rng(value).integers(0, 256, (h, w, 3), dtype=np.uint8), out_h, out_w)
    assert noisy.min() >= 0 and noisy.max() <= 255          # a convex mix: no clamping needed


def test_resize_linear_known_values():
    x = np.arange(4, dtype=np.uint8).reshape(1, 4, 1).repeat(3, axis=2)
    up = R.resize_linear(x, 1, 8)[0, :, 0]
    np.testing.assert_allclose(up, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)   # half_pixel, clamped
    down = R.resize_linear(x, 1, 2)[0, :, 0]
    np.testing.assert_allclose(down, [0.5, 2.5], atol=1e-6)                                # centres, no antialias
    same = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(R.resize_linear(same, 5, 7), same.astype(np.float32))


def _ultralytics_size(w, h, in_h, in_w):
    r = min(in_h / h, in_w / w)
    return r, int(round(w * r)), int(round(h * r))


@settings(deadline=None, max_examples=300)
@given(st.integers(1, 4000), st.integers(1, 4000), input_side, input_side)
def test_scaled_size_is_ultralytics_rounding_in_float32(w, h, in_h, in_w):
    r64, uw, uh = _ultralytics_size(w, h, in_h, in_w)
    new_w, new_h = R.scaled_size(w, h, (in_h, in_w))
    assert R.scale_ratio(w, h, (in_h, in_w)) == pytest.approx(r64, rel=1e-6)
    assert 1 <= new_w <= in_w and 1 <= new_h <= in_h
    assert new_w == in_w or new_h == in_h                    # the limiting side fills the input
    for ours, theirs, v in ((new_w, uw, w * r64), (new_h, uh, h * r64)):
        if abs(v - np.floor(v) - 0.5) > 1e-3 and theirs >= 1:   # away from a .5 tie (float32 vs float64)
            assert ours == theirs


@SETTINGS
@given(st.integers(1, 4000), st.integers(1, 4000), input_side, input_side, placements)
def test_row_is_calib_letterbox_row_and_placement_adds_up(w, h, in_h, in_w, placement):
    row = R.resize_row(w, h, (in_h, in_w), "letterbox", placement)
    new_w, new_h = R.scaled_size(w, h, (in_h, in_w))
    left, top = int(row[PAD_LEFT]), int(row[PAD_TOP])
    assert 0 <= left <= in_w - new_w and 0 <= top <= in_h - new_h
    if placement == "top_left":
        assert (left, top) == (0, 0)
    elif placement == "bottom_right":
        assert (left + new_w, top + new_h) == (in_w, in_h)
    else:
        r64, uw, uh = _ultralytics_size(w, h, in_h, in_w)
        assert row[SCALE_X] == row[SCALE_Y] == r64           # the row keeps Ultralytics' float64 r
        assert (left, top) == ((in_w - new_w) // 2, (in_h - new_h) // 2)
        np.testing.assert_array_equal(letterbox_row(w, h, (in_h, in_w)), row)   # calib's letterbox is this one
    stretch = R.resize_row(w, h, (in_h, in_w), "stretch")
    assert stretch[2] == pytest.approx(in_w / w, rel=1e-6) and stretch[3] == pytest.approx(in_h / h, rel=1e-6)
    assert tuple(stretch[4:]) == (0, 0)


@SETTINGS
@given(side, side, st.sampled_from([(32, 32), (48, 64), (64, 40)]), placements, st.integers(0, 255),
       st.integers(0, 2**32 - 1))
def test_letterbox_resize_places_the_resized_content_in_the_pad(h, w, size, placement, pad, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    canvas, row = R.letterbox_resize(img, size, placement=placement, pad_value=pad)
    assert canvas.shape == (*size, 3) and canvas.dtype == np.float32
    new_w, new_h = R.scaled_size(w, h, size)
    left, top = int(row[PAD_LEFT]), int(row[PAD_TOP])
    content = canvas[top: top + new_h, left: left + new_w]
    np.testing.assert_array_equal(content, R.resize_linear(img, new_h, new_w))
    mask = np.ones(size, bool)
    mask[top: top + new_h, left: left + new_w] = False
    assert np.all(canvas[mask] == pad)
    stretched, srow = R.letterbox_resize(img, size, mode="stretch")
    np.testing.assert_array_equal(stretched, R.resize_linear(img, *size))


@pytest.mark.parametrize("pre", [Preprocess(), Preprocess(channel_order="BGR"),
                                 Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                                 Preprocess(channel_order="BGR", mean=(0, 0, 0), std=(1 / 255,) * 3)])
def test_to_model_input_is_calib_preprocess_scaling(pre):
    canvas = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ours = R.to_model_input(canvas.astype(np.float32), pre.channel_order, pre.mean, pre.std)
    np.testing.assert_array_equal(ours, to_input_tensor(canvas, pre))


@pytest.mark.parametrize("image,msg", [
    (np.zeros((4, 4), np.uint8), "shape"),
    (np.zeros((4, 4, 4), np.uint8), "shape"),
    (np.zeros((4, 4, 3), np.int16), "uint8"),
    (np.zeros((4, 4, 3), np.float64), "uint8"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_bad_images_are_refused(image, msg):
    with pytest.raises(ValueError, match=msg):
        R.letterbox_resize(image, (32, 32))


def test_bad_parameters_are_refused():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="placement"):
        R.letterbox_resize(img, (32, 32), placement="middle")
    with pytest.raises(ValueError, match="mode"):
        R.letterbox_resize(img, (32, 32), mode="crop")
    with pytest.raises(ValueError, match="pad_value"):
        R.letterbox_resize(img, (32, 32), pad_value=300)
    with pytest.raises(ValueError, match="channel_order"):
        R.to_model_input(img, "GRB")
