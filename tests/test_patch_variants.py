"""The two inserted-graph variants: the default (boxes first: one pass over N x C, classes of the
surviving boxes only) and the fixed-shape one for TensorRT (static_shapes=True: no NonZero, no
data-dependent Slice, TopK with constant K). Both equal the numpy reference (the equivalence
tests run both, see conftest.graph_variant); here: their structure, ties across the top-k cut,
and the automatic choice."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from artifact_factory import assert_same_detections, make_artifact, make_calibration, random_head, synthetic_detector
from calib.artifact import PostprocessConfig, identity_map
from calib.letterbox import letterbox_row
from calib.model_info import sha256_file
from calib.pipeline import pack_fixed, postprocess
from onnx_ops.patch import build_patched_model, build_postprocess_graph
from onnx_ops.variants import BOXES_FIRST_MIN_CLASSES

ROW = letterbox_row(640, 640, (640, 640)).astype(np.float32)[None]


def _run(model, raw, rows):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"head": raw, "letterbox": rows})))


def _data_dependent_slices(graph: onnx.GraphProto) -> list[str]:
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Slice" and not all(i in consts for i in n.input[1:3])]


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls", "end2end"])
@pytest.mark.parametrize("kind", ["identity", "temperature", "platt_per_class", "isotonic_per_class"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_static_variant_has_fixed_shapes(layout, kind, multi_label):
    cmap = make_calibration(kind, 4, np.random.default_rng(0))
    cfg = PostprocessConfig(multi_label=multi_label, max_det=50, pre_nms_top_k=200)
    g = build_postprocess_graph(layout, 4, cmap, [0.2, 0.3, 0.25, 0.4], cfg, num_candidates=500, static_shapes=True).graph
    ops = [n.op_type for n in g.node]
    assert "NonZero" not in ops
    assert _data_dependent_slices(g) == []
    consts = {i.name for i in g.initializer}
    assert all(n.input[1] in consts for n in g.node if n.op_type == "TopK")
    assert all(n.name.startswith("detcal/") for n in g.node)


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
@pytest.mark.parametrize("kind", ["identity", "temperature", "platt_per_class", "isotonic_per_class"])
def test_default_variant_reduces_to_boxes_first(layout, kind):
    """Single-label dense heads: no NonZero at all, and the only ops that read all N x C scores
    are the margin's Sub + ReduceMax (plus, for obj * cls, the product itself)."""
    C, N = BOXES_FIRST_MIN_CLASSES + 4, 700
    cmap = make_calibration(kind, C, np.random.default_rng(1))
    g = build_postprocess_graph(layout, C, cmap, np.linspace(0.2, 0.4, C), PostprocessConfig(),
                                num_candidates=N).graph
    assert "NonZero" not in [n.op_type for n in g.node]
    model = onnx.shape_inference.infer_shapes(build_postprocess_graph(
        layout, C, cmap, np.linspace(0.2, 0.4, C), PostprocessConfig(), num_candidates=N, batch=2))
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in model.graph.value_info}
    full = [n for n in model.graph.node for o in n.output
            if (s := shapes.get(o)) and len(s) == 3 and N in s and (C in s or C + 4 in s or C + 5 in s)]
    allowed = {"Sub", "ReduceMax"} if layout == "xywh_cls" else {"Slice", "Mul", "ReduceMax"}
    assert {n.op_type for n in full} <= allowed, [(n.op_type, n.name) for n in full]


@pytest.mark.parametrize("static", [False, True])
def test_ties_across_the_top_k_cut_follow_box_index(static):
    """Every box's best calibrated score is 0.5 (a tie), reached through classes with different raw
    thresholds, so their survival margins differ (0.4 or 0.2): the reference keeps the lowest box
    indices at the pre-NMS cut, whatever the margin, and so must the graph."""
    n, C = 400, 20
    raw = np.zeros((1, 4 + C, n), np.float32)
    raw[0, 0] = np.arange(n) * 30.0 % 600 + 20
    raw[0, 1] = np.arange(n) // 20 * 30.0 + 20
    raw[0, 2:4] = 10.0
    raw[0, 4, 1::2] = 0.5          # odd boxes: class 0 (threshold 0.1, margin 0.4)
    raw[0, 5, 0::2] = 0.5          # even boxes: class 1 (threshold 0.3, margin 0.2)
    cfg = PostprocessConfig(pre_nms_top_k=50, max_det=100, iou_threshold=0.5)
    thr = np.r_[0.1, 0.3, np.full(C - 2, 0.25)]
    g = build_postprocess_graph("xywh_cls", C, identity_map(C), thr, cfg, num_candidates=n, static_shapes=static)
    got = _run(g, raw, ROW)
    ref = pack_fixed(postprocess(raw, "xywh_cls", ROW, identity_map(C), thr, cfg), cfg.max_det)
    assert ref["num_dets"][0, 0] == 50 and set(ref["det_classes"][0, :50]) == {0, 1}
    assert_same_detections(got, ref)


def test_more_survivors_than_the_cap_with_per_class_calibration():
    """Survivors far beyond pre_nms_top_k, per-class Platt and thresholds: the boxes the reference keeps
    are the best by calibrated score, not by raw margin (nothing is capped before calibration)."""
    rng = np.random.default_rng(4)
    C = 20
    raw = random_head("xywh_cls", 2, 3000, C, rng)
    cmap = make_calibration("platt_per_class", C, rng)
    cfg = PostprocessConfig(pre_nms_top_k=40, max_det=30, iou_threshold=0.6)
    thr = np.linspace(0.05, 0.5, C)
    rows = np.repeat(ROW, 2, 0)
    got = _run(build_postprocess_graph("xywh_cls", C, cmap, thr, cfg, num_candidates=3000), raw, rows)
    ref = pack_fixed(postprocess(raw, "xywh_cls", rows, cmap, thr, cfg), cfg.max_det)
    assert ref["num_dets"].min() > 10
    assert_same_detections(got, ref, ties_unordered=True)


# ------------------------------------------------------------------------------------------
# the choice between the variants
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("variants") / "det.onnx"
    onnx.save(synthetic_detector("xywh_cls", num_classes=3, opset=17, sigmoid_front=False), str(path))
    return path


def _variant(result) -> bool:
    meta = {m.key: m.value for m in result.model.metadata_props}
    return json.loads(meta["detcal"])["static_shapes"]


def test_automatic_choice_follows_the_tensorrt_table(detector):
    sha = sha256_file(detector)
    single = make_artifact(3, calibrator="isotonic_per_class", sha256=sha, input_size=(32, 32))
    res = build_patched_model(detector, single)
    assert not _variant(res) and "NonZero" not in [n.op_type for n in res.inserted]
    # multi-label isotonic: the default calibrates survivors via NonZero, which leaves a TensorRT engine
    multi = make_artifact(3, calibrator="isotonic_per_class", sha256=sha, input_size=(32, 32), multi_label=True)
    assert "NonZero" in [n.op_type for n in build_patched_model(detector, multi, static_shapes=False).inserted]
    auto = build_patched_model(detector, multi)
    assert _variant(auto) and "NonZero" not in [n.op_type for n in auto.inserted]
    forced = build_patched_model(detector, single, static_shapes=True)
    assert _variant(forced) and _data_dependent_slices(forced.model.graph) == []


def test_patch_cli_static_shapes(detector, tmp_path, capsys):
    from calib.cli import main

    art = make_artifact(3, calibrator="platt_per_class", sha256=sha256_file(detector), input_size=(32, 32))
    cal = tmp_path / "calibration.json"
    art.save(cal)
    out = tmp_path / "det.static.onnx"
    assert main(["patch", "--model", str(detector), "--calibration", str(cal), "--out", str(out), "--static-shapes"]) == 0
    assert "fixed-shape graph (TensorRT)" in capsys.readouterr().out
    m = onnx.load(str(out))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["detcal"])["static_shapes"] is True
    assert "NonZero" not in [n.op_type for n in m.graph.node] and _data_dependent_slices(m.graph) == []


def test_inspect_names_the_nodes_outside_tensorrt(detector, tmp_path):
    from onnx_ops.inspect import format_inspection, inspect_model

    sha = sha256_file(detector)
    multi = make_artifact(3, calibrator="isotonic_per_class", sha256=sha, input_size=(32, 32), multi_label=True)
    reports = {}
    for static in (False, True):
        path = tmp_path / f"det_{static}.onnx"
        onnx.save(build_patched_model(detector, multi, static_shapes=static).model, str(path))
        reports[static] = inspect_model(str(path))
    dyn = reports[False]["eps"]["trt10"]["falls_back"]
    fixed = reports[True]["eps"]["trt10"]["falls_back"]
    assert any("nonzero" in n for n in dyn) and not any("nonzero" in n for n in fixed)
    assert any("nms" in n for n in fixed)                 # NonMaxSuppression runs outside in both
    assert reports[True]["eps"]["cpu"]["falls_back"] == []
    assert "nodes outside the TensorRT engine" in format_inspection(reports[False])


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("layout,sigmoid_front", [("xywh_cls", True), ("xywh_cls", False), ("xywh_obj_cls", False)])
@pytest.mark.parametrize("kind", ["identity", "temperature", "platt_per_class", "isotonic_per_class"])
@pytest.mark.parametrize("static", [False, True])
def test_whole_models_with_many_classes(tmp_path, opset, layout, sigmoid_front, kind, static):
    """Whole synthetic detectors with enough classes for the boxes-first route (and its Sigmoid-front
    form, which gathers boxes, probabilities and logits of the surviving boxes) equal the reference."""
    from test_patch_models import batch_inputs, run_both

    C = BOXES_FIRST_MIN_CLASSES + 4
    model = synthetic_detector(layout, num_classes=C, opset=opset, sigmoid_front=sigmoid_front, size=64, seed=opset)
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    thr = np.linspace(0.2, 0.45, C) if layout == "xywh_cls" else np.linspace(0.05, 0.15, C)
    art = make_artifact(C, calibrator=kind, thresholds=thr, layout=layout, sha256=sha256_file(path), input_size=(64, 64),
                        max_det=50, iou_threshold=0.5, seed=opset)
    result = build_patched_model(path, art, static_shapes=static)
    ops = [n.op_type for n in result.inserted]
    boxes_first = any(n.name.startswith("detcal/boxes_first/") for n in result.inserted)
    assert boxes_first == (not static) and "NonZero" not in ops
    x, rows = batch_inputs([(100, 60), (64, 64), (50, 90)], input_size=(64, 64), seed=opset)
    got, ref = run_both(path, result.model, art, x, rows, layout)
    assert ref["num_dets"].sum() > 0
    assert_same_detections(got, ref, ties_unordered=result.head.sigmoid_front and kind != "isotonic_per_class")
