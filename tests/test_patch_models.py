"""Whole models: patch real exports (../shared/fixtures) and small synthetic detectors, run them,
and compare with the numpy reference pipeline applied to the raw model's output."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from artifact_factory import (assert_same_detections, make_artifact, make_calibration, near_identity_platt,
                              synthetic_detector)
from calib.letterbox import letterbox_image
from calib.model_info import sha256_file
from calib.pipeline import pack_fixed, postprocess
from calib.artifact import Preprocess
from calib.preprocess import to_input_tensor
from calib.session import make_session
from onnx_ops.patch import build_patched_model, patch_model

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixture exports not found at {FIXTURES} "
                                    "(they live beside the repository, see ../shared/fixtures/README.md)")
LAYOUT = {"yolov8n_640": "xywh_cls", "yolov8n_dynamic": "xywh_cls", "yolov10n_e2e_640": "end2end"}


def session(model):
    return make_session(model, threads=2)


def scene(w: int, h: int, seed: int) -> np.ndarray:
    """A real-looking image: a gradient background with a few flat and textured rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w, 1)), (yy * 255 // max(h, 1)), ((xx + yy) * 127 // max(w + h, 1))], -1)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = x0 + int(rng.integers(8, max(9, w // 3))), y0 + int(rng.integers(8, max(9, h // 3)))
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3) if rng.random() < 0.5 else rng.integers(0, 256, (min(y1, h) - y0, min(x1, w) - x0, 3))
    return img.astype(np.uint8)


def batch_inputs(sizes, input_size=(640, 640), seed=0, dtype=np.float32):
    xs, rows = [], []
    for i, (w, h) in enumerate(sizes):
        img, row = letterbox_image(scene(w, h, seed + i), input_size)
        xs.append(to_input_tensor(img, Preprocess()))
        rows.append(row)
    return np.stack(xs).astype(dtype), np.stack(rows).astype(np.float32)


def run_both(model_path_or_proto, patched, art, x, rows, layout):
    raw_sess, pat_sess = session(model_path_or_proto), session(patched)
    in_name = raw_sess.get_inputs()[0].name
    raw = raw_sess.run(None, {in_name: x})[0]
    got = dict(zip([o.name for o in pat_sess.get_outputs()], pat_sess.run(None, {in_name: x, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw.astype(np.float32), layout, rows, art.calibration, art.score_thresholds, art.nms),
                     art.nms.max_det)
    return got, ref


# ------------------------------------------------------------------------------------------
# the fixture exports
# ------------------------------------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("name", ["yolov8n_640", "yolov10n_e2e_640"])
@pytest.mark.parametrize("kind", ["identity", "platt", "isotonic_per_class", "platt_box"])
def test_fixture_patched_equals_reference(name, kind):
    path = FIXTURES / f"{name}.onnx"
    layout = LAYOUT[name]
    cal = near_identity_platt(80) if kind == "platt" else make_calibration(kind, 80, np.random.default_rng(1))
    # The fixtures' random weights give massively tied scores (44,000 candidates over 0.08 share
    # 100 distinct values). With the identity map the graph is exact even so; with Platt on the
    # Sigmoid-front head the graph calibrates the exact logits, so ties of the rounded
    # probabilities can break differently and, past pre_nms_top_k, select other boxes: keep the
    # candidate count under pre_nms_top_k there (real detectors' scores are continuous).
    thr = {"identity": 0.08, "platt": 0.2, "isotonic_per_class": 0.3, "platt_box": 0.15}[kind]
    art = make_artifact(80, calibrator=cal, thresholds=thr, layout=layout, sha256=sha256_file(path))
    result = build_patched_model(path, art)
    x, rows = batch_inputs([(1280, 720)])
    got, ref = run_both(path, result.model, art, x, rows, layout)
    assert ref["num_dets"][0, 0] > 0
    # Platt on a Sigmoid-front head calibrates the exact logits: near-equal scores may swap order
    assert_same_detections(got, ref, context=f"{name} {kind}", ties_unordered=kind == "platt")
    if layout == "xywh_cls":
        assert result.head.sigmoid_front


@needs_fixtures
def test_dynamic_fixture_dynamic_hw_and_batch():
    """[batch, 3, height, width] export: a 2-image batch at 480x640, each with its own letterbox."""
    path = FIXTURES / "yolov8n_dynamic.onnx"
    art = make_artifact(80, calibrator=near_identity_platt(80, seed=3), thresholds=0.2, sha256=sha256_file(path))
    result = build_patched_model(path, art)
    x, rows = batch_inputs([(640, 360), (300, 500)], input_size=(480, 640))
    got, ref = run_both(path, result.model, art, x, rows, "xywh_cls")
    assert ref["num_dets"].min() > 0
    assert_same_detections(got, ref, ties_unordered=True)
    batch_dims = {o.name: o.type.tensor_type.shape.dim[0].dim_param for o in result.model.graph.output}
    assert set(batch_dims.values()) == {"batch"}, batch_dims
    assert result.model.graph.input[-1].type.tensor_type.shape.dim[0].dim_param == "batch"


@needs_fixtures
def test_batch_of_n_equals_n_single_runs():
    path = FIXTURES / "yolov8n_dynamic.onnx"
    art = make_artifact(80, calibrator="platt_per_class", thresholds=0.1, sha256=sha256_file(path), seed=4)
    sess = session(build_patched_model(path, art).model)
    x, rows = batch_inputs([(1280, 720), (640, 640), (333, 999)], seed=10)
    names = [o.name for o in sess.get_outputs()]
    together = dict(zip(names, sess.run(None, {"images": x, "letterbox": rows})))
    assert len(set(together["num_dets"].ravel().tolist())) > 1 or together["num_dets"].min() > 0
    for i in range(3):
        single = dict(zip(names, sess.run(None, {"images": x[i : i + 1], "letterbox": rows[i : i + 1]})))
        assert_same_detections({k: v[i : i + 1] for k, v in together.items()}, single, context=f"image {i}")


@needs_fixtures
def test_patch_model_writes_beside_a_copy(tmp_path):
    src = tmp_path / "yolov8n_640.onnx"
    shutil.copyfile(FIXTURES / "yolov8n_640.onnx", src)
    before = sha256_file(src)
    art = make_artifact(80, calibrator=near_identity_platt(80), sha256=before)
    out = patch_model(src, art)
    assert out == tmp_path / "yolov8n_640.detcal.onnx" and out.exists()
    assert sha256_file(src) == before                                   # input untouched
    assert not list(tmp_path.glob(".*.tmp"))                            # no temp left behind
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "detcal" in meta and meta["detcal_source_sha256"] == before
    assert meta["names"].startswith("{0:")                              # the source's metadata is kept
    import json
    summary = json.loads(meta["detcal"])
    assert summary["calibrator"] == "platt_per_class" and len(summary["thresholds"]) == 80
    assert [i.name for i in model.graph.input] == ["images", "letterbox"]
    assert [o.name for o in model.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims == {"num_dets": [1, 1], "det_boxes": [1, 300, 4], "det_scores": [1, 300], "det_classes": [1, 300]}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("NonMaxSuppression") == 1
    assert not {"Loop", "If", "Unique", "Scan"} & set(ops)
    source_nodes = {n.name for n in onnx.load(str(src)).graph.node}
    inserted = [n for n in model.graph.node if n.name not in source_nodes]
    assert inserted and all(n.name.startswith("detcal/") for n in inserted)
    assert all(o.startswith("detcal/") or o in dims for n in inserted for o in n.output)
    assert all(i.name.startswith("detcal/") for i in model.graph.initializer if i.name not in
               {j.name for j in onnx.load(str(src)).graph.initializer})
    assert "/model.22/Concat_3" not in {n.name for n in model.graph.node}   # the old head concat is pruned


@needs_fixtures
def test_overrides_iou_max_det_conf(tmp_path):
    path = FIXTURES / "yolov8n_640.onnx"
    art = make_artifact(80, calibrator="identity", thresholds=0.25, sha256=sha256_file(path))
    result = build_patched_model(path, art, iou=0.3, max_det=20, conf=0.05)
    cfg = result.spec.config
    assert (cfg.iou_threshold, cfg.max_det) == (0.3, 20) and np.all(result.spec.thresholds == 0.05)
    sess = session(result.model)
    x, rows = batch_inputs([(800, 600)])
    out = sess.run(None, {"images": x, "letterbox": rows})
    assert out[1].shape == (1, 20, 4) and out[0][0, 0] == 20


@needs_fixtures
def test_inserted_nodes_pass_the_ep_table():
    from onnx_ops import ep_support
    path = FIXTURES / "yolov8n_640.onnx"
    art = make_artifact(80, calibrator="isotonic_per_class", sha256=sha256_file(path))
    result = build_patched_model(path, art)
    errors = [f for f in result.findings if f.level == "error" and f.reason.find("outside TensorRT") < 0]
    assert not errors, errors
    assert ep_support.coverage(result.model)["cpu"].covered


# ------------------------------------------------------------------------------------------
# synthetic detectors: opsets, float16, heads without a Sigmoid in front, obj layout
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13, 17, 18])
@pytest.mark.parametrize("layout,sigmoid_front", [("xywh_cls", True), ("xywh_cls", False), ("xywh_obj_cls", False)])
@pytest.mark.parametrize("kind", ["platt_per_class", "isotonic_per_class"])
def test_synthetic_opsets(tmp_path, opset, layout, sigmoid_front, kind):
    model = synthetic_detector(layout, num_classes=3, opset=opset, sigmoid_front=sigmoid_front, size=64, seed=opset)
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    art = make_artifact(3, calibrator=kind, thresholds=0.3 if layout == "xywh_cls" else 0.1, layout=layout, sha256=sha256_file(path),
                        input_size=(64, 64), max_det=50, iou_threshold=0.5, seed=opset)
    result = build_patched_model(path, art)
    assert result.head.sigmoid_front == (layout == "xywh_cls" and sigmoid_front)
    assert {o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx")} == {opset}
    x, rows = batch_inputs([(100, 60), (64, 64)], input_size=(64, 64), seed=opset)
    got, ref = run_both(path, result.model, art, x, rows, layout)
    assert ref["num_dets"].sum() > 0
    assert_same_detections(got, ref, ties_unordered=result.head.sigmoid_front and kind != "isotonic_per_class")


@pytest.mark.parametrize("sigmoid_front,kind", [(True, "identity"), (True, "platt_per_class"),
                                                (False, "platt_per_class"), (False, "isotonic_per_class")])
def test_float16_model(tmp_path, sigmoid_front, kind):
    """A half-precision export: the inserted part casts to float32; outputs are float32.

    Agreement is to float16 precision, not 1e-5: onnxruntime's CPU EP runs float16 models in
    float32 and drops Cast(float->half->float) pairs, so the inserted part can see the head's
    values before their rounding to half, while the reference sees the rounded output (and with
    a Sigmoid in front, Platt uses the exact logits).
    """
    model = synthetic_detector("xywh_cls", num_classes=4, opset=17, fp16=True, sigmoid_front=sigmoid_front, size=64)
    path = tmp_path / "det16.onnx"
    onnx.save(model, str(path))
    art = make_artifact(4, calibrator=kind, thresholds=0.3, sha256=sha256_file(path), input_size=(64, 64), max_det=40,
                        iou_threshold=0.5)
    result = build_patched_model(path, art)
    types = {o.name: o.type.tensor_type.elem_type for o in result.model.graph.output}
    assert types["det_boxes"] == onnx.TensorProto.FLOAT and types["det_scores"] == onnx.TensorProto.FLOAT
    assert result.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x, rows = batch_inputs([(64, 128)], input_size=(64, 64), dtype=np.float16)
    got, ref = run_both(path, result.model, art, x, rows, "xywh_cls")
    n_ref, n_got = int(ref["num_dets"][0, 0]), int(got["num_dets"][0, 0])
    assert n_ref > 0 and abs(n_got - n_ref) <= max(1, n_ref // 10)
    matched = 0
    for i in range(n_ref):
        ok = ((got["det_classes"][0, :n_got] == ref["det_classes"][0, i])
              & (np.abs(got["det_scores"][0, :n_got] - ref["det_scores"][0, i]) <= 2e-3)
              & np.all(np.abs(got["det_boxes"][0, :n_got] - ref["det_boxes"][0, i]) <= 0.1, axis=1))
        matched += bool(ok.any())
    assert matched >= 0.9 * n_ref, (matched, n_ref)


def test_opset_10_is_upgraded(tmp_path):
    model = synthetic_detector("xywh_cls", num_classes=2, opset=10, size=32)
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    art = make_artifact(2, calibrator="temperature", thresholds=0.2, sha256=sha256_file(path), input_size=(32, 32), max_det=20)
    result = build_patched_model(path, art)
    assert {o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx")} == {11}
    x, rows = batch_inputs([(32, 32)], input_size=(32, 32))
    got, ref = run_both(path, result.model, art, x, rows, "xywh_cls")
    assert_same_detections(got, ref)


def test_outputs_beside_the_head_are_kept_unchanged(tmp_path):
    """A detector that also outputs something else (an embedding for re-ID or tracking, a per-level
    map) keeps that output, with the same values, next to the four detection outputs."""
    from onnx import TensorProto, helper

    m = synthetic_detector("xywh_cls", num_classes=3, opset=17, size=64)
    feat = m.graph.node[0].output[0]                       # the first node's output: a feature map
    m.graph.node.append(helper.make_node("GlobalAveragePool", [feat], ["embed"], name="embed_pool"))
    m.graph.output.append(helper.make_tensor_value_info("embed", TensorProto.FLOAT, None))
    src = tmp_path / "det.onnx"
    onnx.save(m, str(src))
    art = make_artifact(3, calibrator="platt_per_class", thresholds=0.2, sha256=sha256_file(src), input_size=(64, 64),
                        max_det=20)
    out = patch_model(src, art, tmp_path / "det.detcal.onnx")
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names == ["num_dets", "det_boxes", "det_scores", "det_classes", "embed"], names
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    want = session(src).run(["embed"], {"images": x})[0]
    got = session(out).run(["embed"], {"images": x, "letterbox": np.array([[0, 0, 1, 1, 64, 64]] * 2, np.float32)})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
def test_a_head_output_declared_without_a_shape_is_read_from_the_probe(tmp_path, layout):
    """Some exporters and graph editors leave an output's type without a shape: the head is then
    recognised from the probe run's shape, and the patched model matches the reference."""
    m = synthetic_detector(layout, num_classes=3, opset=17, size=64)
    m.graph.output[0].type.tensor_type.ClearField("shape")
    src = tmp_path / "det.onnx"
    onnx.save(m, str(src))
    art = make_artifact(3, calibrator="platt_per_class", thresholds=0.2, sha256=sha256_file(src), input_size=(64, 64),
                        layout=layout, max_det=20)
    out = patch_model(src, art, tmp_path / "det.detcal.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    rows = np.array([[0, 0, 1, 1, 64, 64]] * 2, np.float32)
    raw = session(src).run(None, {"images": x})[0]
    s = session(out)
    got = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, layout, rows, art.calibration, art.score_thresholds, art.nms), 20)
    assert_same_detections(got, ref, ties_unordered=True)
