"""calib.head_decoders (numpy decode of yolox_raw, gfl_multilevel, detr) and calib.head_recognition.

Decoders are checked against per-anchor loops written from the projects' published decodes
(YOLOX's demo_postprocess, PaddleDetection's disPred2Bbox, RT-DETR's box_cxcywh_to_xyxy * size)
on random heads; recognition on small models of each family built in code (tests/heads_factory.py)
and, where ../shared/real is present, on the real YOLOX-nano and PicoDet-S exports.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heads_factory as hf
from calib.errors import DetcalError
from calib.head_decoders import (
    anchor_points,
    decode_detr,
    decode_gfl_multilevel,
    decode_head,
    decode_yolox_raw,
    infer_gfl_strides,
    level_counts,
)
from calib.head_recognition import recognise_head

SHARED = Path(os.environ.get("DETCAL_SHARED", Path(__file__).resolve().parents[1].parent / "shared")).resolve()
REAL = SHARED / "real" / "models"
FIXTURES = SHARED / "fixtures"


# ------------------------------------------------------------------------------------------
# decoders vs per-anchor loops
# ------------------------------------------------------------------------------------------
def _yolox_loop(raw, size, strides=(8, 16, 32), ceil=False):
    out = []
    for b in range(raw.shape[0]):
        k, rows = 0, []
        for s in strides:
            for i in range(-(-size[0] // s) if ceil else size[0] // s):
                for j in range(-(-size[1] // s) if ceil else size[1] // s):
                    x, y, w, h = raw[b, k, :4].astype(np.float64)
                    cx, cy, ww, hh = (x + j) * s, (y + i) * s, math.exp(w) * s, math.exp(h) * s
                    rows.append([cx - ww / 2, cy - hh / 2, cx + ww / 2, cy + hh / 2])
                    k += 1
        out.append(rows)
    return np.array(out), raw[:, :, 4:5].astype(np.float64) * raw[:, :, 5:]


def _gfl_loop(cls_levels, box_levels, size, strides, reg_max):
    boxes = []
    for s, bl in zip(strides, box_levels):
        cols = math.ceil(size[1] / s)
        for idx in range(bl.shape[1]):
            y, x = divmod(idx, cols)
            ct_x, ct_y = (x + 0.5) * s, (y + 0.5) * s
            d = []
            for side in range(4):
                v = bl[0, idx, side * (reg_max + 1):(side + 1) * (reg_max + 1)].astype(np.float64)
                e = np.exp(v - v.max())
                d.append(float((e / e.sum()) @ np.arange(reg_max + 1)) * s)
            boxes.append([ct_x - d[0], ct_y - d[1], ct_x + d[2], ct_y + d[3]])
    return np.array(boxes)[None], np.concatenate(cls_levels, axis=1)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_yolox_raw_matches_demo_postprocess_loop(hc, wc, num_classes, seed):
    size = (32 * hc, 32 * wc)
    raw = hf.random_yolox_raws(np.random.default_rng(seed), size, 2, num_classes)[0]
    dec = decode_yolox_raw(raw, size)
    want_boxes, want_scores = _yolox_loop(raw, size)
    np.testing.assert_allclose(dec.boxes_xyxy, want_boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dec.scores, want_scores, rtol=1e-6, atol=1e-7)
    assert dec.boxes_xyxy.dtype == np.float32 and dec.is_dense


@settings(max_examples=15, deadline=None)
@given(st.integers(40, 300), st.integers(40, 300), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_yolox_raw_at_any_size_takes_the_grid_its_anchor_count_says(h, w, num_classes, seed):
    """Ceil grids (YOLOX's stride-2 backbone off multiples of 32) and floor grids (demo_postprocess)
    are told apart by N; at multiples of 32 they are the same."""
    size = (h, w)
    for ceil in (False, True):
        raw = hf.random_yolox_raws(np.random.default_rng(seed), size, 1, num_classes, ceil=ceil)[0]
        dec = decode_yolox_raw(raw, size)
        want_boxes, _ = _yolox_loop(raw, size, ceil=ceil)
        np.testing.assert_allclose(dec.boxes_xyxy, want_boxes, rtol=1e-5, atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(st.integers(33, 160), st.integers(33, 160), st.sampled_from((7, 16)), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_gfl_matches_dispred2bbox_loop(h, w, reg_max, batch_axis, seed):
    size, strides = (h, w), (8, 16, 32, 64)
    raws = hf.random_gfl_raws(np.random.default_rng(seed), size, 1, 3, reg_max, strides)
    cls, box = raws[:4], raws[4:]
    args = (cls, box) if batch_axis else ([c[0] for c in cls], [x[0] for x in box])
    dec = decode_gfl_multilevel(*args, size)            # strides inferred from N_l
    want_boxes, want_scores = _gfl_loop(cls, box, size, strides, reg_max)
    np.testing.assert_allclose(dec.boxes_xyxy, want_boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(dec.scores, want_scores)
    # every box contains its anchor centre (distances are >= 0)
    centre = np.concatenate([anchor_points(size, [s], offset=0.5, ceil=True)[0] * s for s in strides])
    assert np.all(dec.boxes_xyxy[0, :, :2] <= centre + 1e-3) and np.all(dec.boxes_xyxy[0, :, 2:] >= centre - 1e-3)


@settings(max_examples=20, deadline=None)
@given(st.integers(16, 1000), st.integers(16, 1000), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_detr_boxes_scale_to_input_and_scores_are_probabilities(h, w, two, logits, seed):
    raws = hf.random_detr_raws(np.random.default_rng(seed), 2, 50, 4, two)
    dec = decode_head("detr", raws, (h, w), scores_are_logits=logits)
    norm = raws[0][..., :4].astype(np.float64)
    cx, cy, bw, bh = norm[..., 0] * w, norm[..., 1] * h, norm[..., 2] * w, norm[..., 3] * h
    want = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    np.testing.assert_allclose(dec.boxes_xyxy, want, rtol=1e-5, atol=1e-3)
    cls = raws[1] if two else raws[0][..., 4:]
    np.testing.assert_allclose(dec.scores, 1 / (1 + np.exp(-cls.astype(np.float64))) if logits else cls, atol=1e-6)
    assert dec.scores.min() >= 0 and dec.scores.max() <= 1 or not logits


def _nanodet_plus_loop(raw, size, strides, num_classes, reg_max, offset):
    """NanoDet-Plus `get_bboxes`, written out per point: featmap (ceil(H/s), ceil(W/s)), centre
    ((x + offset) s, (y + offset) s) (offset 0: `get_single_level_center_priors`), Integral (softmax
    . k) times the stride, distance2bbox; scores are the first C columns (already sigmoid)."""
    boxes = []
    k = 0
    for s in strides:
        rows, cols = -(-size[0] // s), -(-size[1] // s)
        for y in range(rows):
            for x in range(cols):
                ct_x, ct_y = (x + offset) * s, (y + offset) * s
                d = []
                for side in range(4):
                    v = raw[0, k, num_classes + side * (reg_max + 1):num_classes + (side + 1) * (reg_max + 1)]
                    e = np.exp(v.astype(np.float64) - v.max())
                    d.append(float((e / e.sum()) @ np.arange(reg_max + 1)) * s)
                boxes.append([ct_x - d[0], ct_y - d[1], ct_x + d[2], ct_y + d[3]])
                k += 1
    assert k == raw.shape[1]
    return np.array(boxes)[None], raw[:, :, :num_classes]


@settings(max_examples=15, deadline=None)
@given(st.integers(33, 200), st.integers(33, 200), st.sampled_from((7, 10)), st.sampled_from((1, 3)),
       st.sampled_from(((8, 16, 32, 64), (8, 16, 32))), st.sampled_from((0.0, 0.5)), st.integers(0, 2**31 - 1))
def test_nanodet_single_output_matches_get_bboxes_loop(h, w, reg_max, num_classes, strides, offset, seed):
    size = (h, w)
    raw = hf.random_nanodet_raw(np.random.default_rng(seed), size, 1, num_classes, reg_max, strides)[0]
    dec = decode_head("gfl_multilevel", [raw], size, single_output=True, num_classes=num_classes,
                      strides=strides, cell_offset=offset)
    want_boxes, want_scores = _nanodet_plus_loop(raw, size, strides, num_classes, reg_max, offset)
    np.testing.assert_allclose(dec.boxes_xyxy, want_boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(dec.scores, want_scores)
    with pytest.raises(ValueError, match="single output"):
        decode_head("gfl_multilevel", [raw[:, 1:]], size, single_output=True, num_classes=num_classes, strides=strides)


def test_anchor_counts_and_stride_inference():
    assert sum(level_counts((416, 416), (8, 16, 32), False)) == 3549
    assert level_counts((320, 320), (8, 16, 32, 64), True) == [1600, 400, 100, 25]
    assert infer_gfl_strides([1600, 400, 100, 25], (320, 320)) == (8, 16, 32, 64)
    assert infer_gfl_strides([1601], (320, 320)) is None


def test_decoders_reject_wrong_shapes():
    with pytest.raises(ValueError, match="anchors"):
        decode_yolox_raw(np.zeros((1, 100, 85), np.float32), (416, 416))
    with pytest.raises(ValueError, match="box output per class output"):
        decode_gfl_multilevel([np.zeros((1, 16, 3))], [], (32, 32))
    with pytest.raises(ValueError, match="4 \\(R\\+1\\)"):
        decode_gfl_multilevel([np.zeros((1, 16, 3))], [np.zeros((1, 16, 30))], (32, 32))
    with pytest.raises(ValueError, match="detr"):
        decode_detr(np.zeros((1, 10, 3)), None, (32, 32))
    with pytest.raises(ValueError, match="unknown head layout"):
        decode_head("ssd", [np.zeros((1, 1, 1))], (32, 32))


# ------------------------------------------------------------------------------------------
# recognition on built models
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, layout, extra", [
    (lambda: hf.yolox_raw_model(), "yolox_raw", {"strides": (8, 16, 32)}),
    (lambda: hf.gfl_model(), "gfl_multilevel", {"strides": (8, 16, 32, 64), "reg_max": 7, "batch_axis": True}),
    (lambda: hf.gfl_model(batch_axis=False, reg_max=16, strides=(8, 16, 32)), "gfl_multilevel",
     {"strides": (8, 16, 32), "reg_max": 16, "batch_axis": False}),
    (lambda: hf.detr_model(), "detr", {"scores_are_logits": True}),
    (lambda: hf.detr_model(two_outputs=True), "detr", {"scores_are_logits": True}),
    (lambda: hf.detr_model(sigmoid_scores=True, metadata={"description": "Ultralytics rtdetr-l"}), "detr",
     {"scores_are_logits": False}),
])
def test_families_are_recognised(make, layout, extra):
    rec = recognise_head(make(), "m.onnx")
    assert rec.layout == layout
    assert rec.num_classes == 3
    for k, v in extra.items():
        assert rec.params[k] == v, (k, rec.params)
    assert "probe on a grey image" in rec.reason


@pytest.mark.parametrize("strides, offset, words", [((8, 16, 32, 64), 0.0, "NanoDet-Plus"),
                                                    ((8, 16, 32), 0.5, "legacy NanoDet head")])
def test_nanodet_single_output_is_recognised(strides, offset, words):
    rec = recognise_head(hf.nanodet_plus_model(size=(192, 160), strides=strides), "m.onnx")
    assert rec.layout == "gfl_multilevel" and rec.outputs == ["output"] and rec.num_classes == 3
    assert rec.params["single_output"] and rec.params["num_classes"] == 3 and rec.params["reg_max"] == 7
    assert rec.params["strides"] == strides and rec.params["cell_offset"] == offset
    assert words in rec.reason and "first 3 columns lie in [0, 1]" in rec.reason, rec.reason
    assert "probe on a grey image" in rec.reason


def test_nanodet_single_output_with_the_yolox_anchor_count_is_told_apart_by_the_probe():
    """Legacy NanoDet at 320: N = 2100 = the YOLOX grid; the probe's columns decide."""
    rec = recognise_head(hf.nanodet_plus_model(size=(320, 320), strides=(8, 16, 32), num_classes=3), "m.onnx")
    assert rec.layout == "gfl_multilevel" and {"yolox_raw", "gfl_multilevel"} <= set(rec.candidates)
    assert recognise_head(hf.yolox_raw_model(size=(320, 320), num_classes=30), "m.onnx").layout == "yolox_raw"


def _constant_head_model(raw: np.ndarray, size) -> onnx.ModelProto:
    """images [1, 3, H, W] -> `output` = raw (+ 0 * the image mean): a head whose probe values are `raw`."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1),
             helper.make_node("Reshape", ["m", "one"], ["m1"]),
             helper.make_node("Mul", ["m1", "zero"], ["z"]), helper.make_node("Add", ["raw", "z"], ["output"])]
    inits = [numpy_helper.from_array(raw.astype(np.float32), "raw"), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.array([1, 1, 1], np.int64), "one")]
    g = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *size])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(raw.shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_yolox_rows_with_a_leading_column_in_0_1_are_not_a_nanodet_split():
    """YOLOX at 320 has N = 2100, the legacy NanoDet count; x offsets all in [0, 1] make a leading
    run of 1 column and 84 = 4 (20 + 1) more: the objectness and class columns in [0, 1] say no."""
    rng = np.random.default_rng(0)
    raw = hf.random_yolox_raws(rng, (320, 320), 1, 80)[0]
    raw[..., 0] = rng.uniform(0, 1, raw.shape[1])
    raw[..., 1] = rng.uniform(-1, 2, raw.shape[1])
    raw[..., 2:4] = rng.uniform(-1, 1, (raw.shape[1], 2))          # log sizes of a trained head
    rec = recognise_head(_constant_head_model(raw, (320, 320)), "m.onnx")
    assert "gfl_multilevel" in rec.candidates and rec.layout == "yolox_raw", rec.reason


def test_nanodet_single_output_split_from_the_class_count_and_layout_override():
    m = hf.nanodet_plus_model(size=(256, 256), num_classes=4, reg_max=10)      # D = 48: R = 7 would read C = 16
    for kwargs in ({"num_classes": 4}, {"layout": "gfl_multilevel"}, {}):
        rec = recognise_head(m, "m.onnx", **kwargs)
        assert rec.layout == "gfl_multilevel", kwargs
        assert (rec.params["num_classes"], rec.params["reg_max"]) == (4, 10), (kwargs, rec.params)


@pytest.mark.parametrize("make, layout", [(lambda: hf.yolox_raw_model(dynamic=True), "yolox_raw"),
                                          (lambda: hf.gfl_model(dynamic=True), "gfl_multilevel"),
                                          (lambda: hf.nanodet_plus_model(dynamic=True), "gfl_multilevel")])
def test_dynamic_size_heads_are_recognised_at_the_probe_size(make, layout):
    from calib.head_recognition import PROBE_SIZE

    rec = recognise_head(make(), "m.onnx")
    assert rec.layout == layout and rec.input_hw == PROBE_SIZE
    assert "dynamic height/width: recognised at the probe's 640x640" in rec.reason


def test_gfl_outputs_are_ordered_class_levels_then_box_levels():
    rec = recognise_head(hf.gfl_model(), "m.onnx")
    assert rec.outputs == [f"cls_{s}" for s in (8, 16, 32, 64)] + [f"box_{s}" for s in (8, 16, 32, 64)]


def test_one_class_yolov5_and_end2end_of_the_same_shape_are_told_apart_by_the_graph():
    v5, e2e = hf.yolov5_one_class_model(), hf.end2end_model()
    assert [d.dim_value for d in v5.graph.output[0].type.tensor_type.shape.dim] == \
        [d.dim_value for d in e2e.graph.output[0].type.tensor_type.shape.dim]
    r5, re = recognise_head(v5, "v5.onnx"), recognise_head(e2e, "e2e.onnx")
    assert (r5.layout, re.layout) == ("xywh_obj_cls", "end2end")
    assert "no TopK/NonMaxSuppression" in r5.reason and "TopK/NonMaxSuppression present" in re.reason


def test_yolox_raw_is_not_taken_for_a_decoded_head():
    rec = recognise_head(hf.yolox_raw_model(), "yolox.onnx")
    assert rec.layout == "yolox_raw" and "grid-cell offsets" in rec.reason
    assert "xywh_obj_cls" in rec.candidates


def test_one_class_yolox_grid_raw_or_decoded_is_told_apart_by_the_probe():
    """[1, N, 6] at the YOLOX grid's N fits yolox_raw, a decoded one-class head and end2end: the
    probe's x/y spread tells grid-cell offsets (raw) from pixel centres (decoded)."""
    size = (64, 96)
    raw = recognise_head(hf.yolox_raw_model(size=size, num_classes=1), "yolox.onnx")
    assert raw.layout == "yolox_raw" and "grid-cell offsets" in raw.reason, raw.reason
    decoded = recognise_head(hf.yolov5_one_class_model(size=size, anchors=1), "decoded.onnx")
    assert decoded.layout == "xywh_obj_cls" and "yolox_raw" in decoded.candidates, (decoded.layout, decoded.reason)


def test_layout_override_wins_and_unknown_layout_is_refused():
    rec = recognise_head(hf.yolox_raw_model(), "yolox.onnx", layout="xywh_obj_cls")
    assert rec.layout == "xywh_obj_cls" and "--layout xywh_obj_cls" in rec.reason
    with pytest.raises(DetcalError, match="unknown layout 'ssd'"):
        recognise_head(hf.yolox_raw_model(), "yolox.onnx", layout="ssd")


def test_undecodable_probe_gives_one_line_naming_the_file_and_layouts():
    # a YOLOX raw head whose x/y columns hold huge values: no layout decodes it sanely
    m = hf.yolox_raw_model()
    for init in m.graph.initializer:
        if init.name.startswith("b_"):
            arr = onnx.numpy_helper.to_array(init).copy()
            arr[:4] = 1e4
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    with pytest.raises(DetcalError) as e:
        recognise_head(m, "weird.onnx")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("weird.onnx:") and "--layout" in msg


def test_nothing_fits_names_what_was_found():
    from heads_factory import _Net
    net = _Net(0)
    net.op("Flatten", net.op("GlobalAveragePool", "images"), out="feat")
    m = net.model([1, 3, 32, 32], [("feat", [1, 3])])
    with pytest.raises(DetcalError, match=r"m.onnx: no output fits a supported layout \(found: feat \[1, 3\]\)"):
        recognise_head(m, "m.onnx")


# ------------------------------------------------------------------------------------------
# real exports (../shared/real/models), skipped where absent
# ------------------------------------------------------------------------------------------
def _real(name: str) -> Path:
    p = REAL / name
    if not p.exists():
        pytest.skip(f"{p} absent (../shared/real is outside the project; set DETCAL_SHARED to its parent)")
    return p


def test_real_yolox_nano_is_yolox_raw():
    p = _real("yolox_nano_coco_416.onnx")
    rec = recognise_head(onnx.load(str(p)), str(p))
    assert (rec.layout, rec.num_classes, rec.input_hw) == ("yolox_raw", 80, (416, 416))


def test_real_picodet_is_gfl_with_four_levels():
    p = _real("picodet_s_coco_320.onnx")
    rec = recognise_head(onnx.load(str(p)), str(p))
    assert rec.layout == "gfl_multilevel" and rec.num_classes == 80
    assert rec.params["strides"] == (8, 16, 32, 64) and rec.params["reg_max"] == 7
    assert all(rec.output_shapes[i][-1] == 80 for i in range(4)) and all(s[-1] == 32 for s in rec.output_shapes[4:])


@pytest.mark.parametrize("name, layout", [("yolov8n_640.onnx", "xywh_cls"), ("yolov10n_e2e_640.onnx", "end2end")])
def test_fixtures_keep_their_layouts(name, layout):
    p = FIXTURES / name
    if not p.exists():
        pytest.skip(f"{p} absent (../shared/fixtures is outside the project)")
    assert recognise_head(onnx.load(str(p)), str(p)).layout == layout


def test_describe_head_for_inspect():
    from calib.head_recognition import describe_head

    d = describe_head(hf.gfl_model(), "m.onnx")
    assert d["layout"] == "gfl_multilevel" and d["strides"] == [8, 16, 32, 64] and d["reg_max"] == 7
    m = hf.detr_model(metadata={"imgsz": "[64, 64]", "names": "{0: 'a', 1: 'b', 2: 'c'}"})
    d = describe_head(m, "m.onnx")
    assert d["layout"] == "detr" and d["hints"]["imgsz"] == "[64, 64]" and d["hints"]["names"].startswith("3 classes")
    from heads_factory import _Net
    net = _Net(0)
    net.op("Flatten", net.op("GlobalAveragePool", "images"), out="feat")
    d = describe_head(net.model([1, 3, 32, 32], [("feat", [1, 3])]), "m.onnx")
    assert "no output fits" in d["error"]
