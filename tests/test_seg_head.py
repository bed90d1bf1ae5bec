"""Segmentation heads (Ultralytics -seg): recognised, scored on rows 4..4+C only, and patched so that
the kept detections keep their mask coefficients (det_masks_coeffs [B, K, M]) beside the prototypes."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from PIL import Image

from artifact_factory import assert_same_detections, make_artifact, make_calibration, random_head
from calib.artifact import DET_MASKS_COEFFS, PATCHED_OUTPUTS, PatchedMetadata, PostprocessConfig, load_artifact
from calib.cli import main
from calib.errors import DetcalError
from calib.head_recognition import describe_head
from calib.mask_coeffs import split_mask_coeffs
from calib.model_info import read_model_info
from calib.pipeline import pack_fixed, postprocess
from calib.preprocess import preprocess_image
from onnx_ops.patch import build_patched_model, build_postprocess_graph
from seg_factory import CONCATS, random_seg_model, seg_blob_detector

M = 32


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _rows(rng, batch: int, size) -> np.ndarray:
    """Random letterbox rows (B, 6) for an input of `size` (H, W)."""
    rows = []
    for _ in range(batch):
        s = float(rng.uniform(0.5, 2.0))
        ow, oh = float(rng.uniform(10, size[1] / s)), float(rng.uniform(10, size[0] / s))
        rows.append([ow, oh, s, s, float(rng.uniform(0, size[1] - ow * s)), float(rng.uniform(0, size[0] - oh * s))])
    return np.asarray(rows, np.float32)


def _save(model, path):
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------
# recognition and inspect
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("concat", CONCATS)
def test_recognised_as_xywh_cls_with_mask_coeffs(tmp_path, concat):
    path = _save(random_seg_model(num_classes=5, concat=concat), tmp_path / "seg.onnx")
    info = read_model_info(path)
    assert (info.layout, info.num_classes, info.output_name) == ("xywh_cls", 5, "output0")
    assert info.head_params == {"mask_coeffs": M, "prototypes": "output1"}
    assert "M = 32 mask coefficients" in info.recognition and "segment" in info.recognition
    # the dataset's class count agrees; a wrong one is not read as a seg head (C would differ)
    assert read_model_info(path, num_classes=5).num_classes == 5


def test_without_metadata_the_prototypes_give_m(tmp_path):
    model = random_seg_model(num_classes=4, masks=16, task_metadata=False)
    del model.metadata_props[:]
    info = read_model_info(_save(model, tmp_path / "seg.onnx"))
    assert (info.num_classes, info.head_params["mask_coeffs"]) == (4, 16)
    assert "metadata" not in info.recognition.split("probe")[0]


def test_plain_detector_has_no_mask_params(blob_model):
    info = read_model_info(blob_model)
    assert info.head_params == {} and "mask" not in info.recognition


def test_inspect_prints_the_mask_coefficients(tmp_path, capsys):
    path = _save(random_seg_model(num_classes=20), tmp_path / "seg.onnx")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "head: xywh_cls (20 classes" in out and "32 mask coefficients, prototypes output1" in out, out
    d = describe_head(onnx.load(str(path)), str(path))
    assert (d["mask_coeffs"], d["prototypes"]) == (M, "output1")


# ------------------------------------------------------------------------------------------
# the numpy reference: coefficients follow their boxes, never score
# ------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 120), c=st.integers(1, 6), batch=st.integers(1, 3),
       multi=st.booleans())
def test_reference_coeffs_belong_to_their_boxes(seed, n, c, batch, multi):
    rng = np.random.default_rng(seed)
    head = random_head("xywh_cls", batch, n, c, rng, input_size=(64, 64))
    coeffs = rng.normal(0, 5, (batch, M, n)).astype(np.float32)     # far outside [0, 1]: must never score
    coeffs[:, 0, :] = np.arange(n)                                   # row 0 names the box
    raw = np.concatenate([head, coeffs], axis=1)
    rows, cfg = _rows(rng, batch, (64, 64)), PostprocessConfig(multi_label=multi, max_det=50)
    cal = make_calibration("platt_per_class", c, rng)
    seg = postprocess(raw, "xywh_cls", rows, cal, 0.2, cfg, mask_coeffs=M)
    det = postprocess(head, "xywh_cls", rows, cal, 0.2, cfg)
    for s, d, b in zip(seg, det, range(batch)):
        np.testing.assert_array_equal(s.scores, d.scores)
        np.testing.assert_array_equal(s.boxes_xyxy, d.boxes_xyxy)
        box = s.mask_coeffs[:, 0].astype(np.int64)
        np.testing.assert_array_equal(s.mask_coeffs, coeffs[b].T[box])
        cx = head[b, 0, box]                                          # the named box is the detection's box
        np.testing.assert_allclose((s.boxes_input_xyxy[:, 0] + s.boxes_input_xyxy[:, 2]) / 2, cx, atol=1e-3)
    packed = pack_fixed(seg, 50)
    assert packed[DET_MASKS_COEFFS].shape == (batch, 50, M)
    for b in range(batch):
        k = int(packed["num_dets"][b, 0])
        assert not packed[DET_MASKS_COEFFS][b, k:].any()


def test_split_mask_coeffs_rejects_a_head_without_score_rows():
    with pytest.raises(ValueError, match="4\\+C\\+32"):
        split_mask_coeffs(np.zeros((1, 36, 10), np.float32), M)


# ------------------------------------------------------------------------------------------
# the graph equals the reference, det_masks_coeffs included (exact same order)
# ------------------------------------------------------------------------------------------
GRAPH_CASES = [(c, kind, static) for c in (3, 20) for kind in ("identity", "platt_per_class", "isotonic_per_class")
               for static in (False, True)] + [(20, "platt_box", False)]


@pytest.fixture(scope="module")
def cut_graphs():
    """(C, calibrator kind, static, multi, n_static) -> (session, calibration), built once."""
    cache = {}

    def get(c, kind, static, multi, n_static, thr):
        key = (c, kind, static, multi, n_static, thr)
        if key not in cache:
            cal = make_calibration(kind, c, np.random.default_rng(c))
            cfg = PostprocessConfig(multi_label=multi, max_det=40, pre_nms_top_k=100)
            g = build_postprocess_graph("xywh_cls", c, cal, thr, cfg, num_candidates=n_static, mask_coeffs=M,
                                        static_shapes=static)
            onnx.checker.check_model(g, full_check=True)
            cache[key] = (_session(g), cal, cfg)
        return cache[key]
    return get


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(GRAPH_CASES), seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1, 7, 150]),
       batch=st.integers(1, 3), multi=st.booleans(), fixed_n=st.booleans(), thr=st.sampled_from([0.05, 0.3]),
       grid=st.booleans())
def test_graph_equals_reference_with_mask_coeffs(cut_graphs, case, seed, n, batch, multi, fixed_n, thr, grid):
    c, kind, static = case
    multi = multi and kind != "platt_box"
    sess, cal, cfg = cut_graphs(c, kind, static, multi, n if fixed_n else None, thr)
    rng = np.random.default_rng(seed)
    raw = np.concatenate([random_head("xywh_cls", batch, n, c, rng, grid=grid),
                          rng.normal(0, 3, (batch, M, n)).astype(np.float32)], axis=1)
    rows = _rows(rng, batch, (640, 640))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"head": raw, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, "xywh_cls", rows, cal, thr, cfg, mask_coeffs=M), cfg.max_det)
    ctx = f"C={c} {kind} static={static} multi={multi} n={n}"
    assert_same_detections(got, ref, context=ctx)
    assert got[DET_MASKS_COEFFS].dtype == np.float32 and got[DET_MASKS_COEFFS].shape == (batch, cfg.max_det, M)
    np.testing.assert_array_equal(got[DET_MASKS_COEFFS], ref[DET_MASKS_COEFFS], err_msg=ctx)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("concat", CONCATS)
@pytest.mark.parametrize("c", [3, 20])
def test_patched_model_keeps_coeffs_and_prototypes(tmp_path, concat, c, static):
    """Whole models, each Concat form: taps where the export has them, the prototypes untouched."""
    model = random_seg_model(num_classes=c, concat=concat, seed=c)
    path = _save(model, tmp_path / "seg.onnx")
    art = make_artifact(c, calibrator="isotonic_per_class" if c == 3 else "platt_per_class", thresholds=0.3,
                        input_size=(64, 64), max_det=30, seed=1)
    res = build_patched_model(path, art, force=True, static_shapes=static)
    names = [o.name for o in res.model.graph.output]
    assert names == [*PATCHED_OUTPUTS, DET_MASKS_COEFFS, "output1"]
    assert all(n.name.startswith("detcal/") for n in res.inserted)
    assert all(o.startswith("detcal/") or o in names for n in res.inserted for o in n.output)
    if concat != "plain":          # the head's Concat is read apart (coefficients tapped) and pruned
        assert not any("output0" in n.output for n in res.model.graph.node)
        assert res.head.seg.coeffs == "coeffs" and res.head.sigmoid_front
    rng = np.random.default_rng(c)
    x = rng.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    rows = np.array([[64, 64, 1, 1, 0, 0], [50, 40, 1.2, 1.2, 2, 8]], np.float32)
    got = dict(zip(names, _session(res.model).run(None, {"images": x, "letterbox": rows})))
    raw, protos = _session(model).run(None, {"images": x})
    ref = pack_fixed(postprocess(raw, "xywh_cls", rows, art.calibration, art.score_thresholds, art.nms,
                                 mask_coeffs=M), art.nms.max_det)
    assert ref["num_dets"].min() > 0
    assert_same_detections(got, ref, ties_unordered=res.head.sigmoid_front, context=concat)
    if not res.head.sigmoid_front:
        np.testing.assert_array_equal(got[DET_MASKS_COEFFS], ref[DET_MASKS_COEFFS])
    else:   # same detections; match each one's coefficients by its box (ties may swap rows)
        for b in range(2):
            k = int(ref["num_dets"][b, 0])
            for i in range(k):
                j = np.argmin(np.abs(got["det_boxes"][b, :k] - ref["det_boxes"][b, i]).sum(axis=1))
                np.testing.assert_allclose(got[DET_MASKS_COEFFS][b, j], ref[DET_MASKS_COEFFS][b, i], rtol=0, atol=1e-6)
            assert not got[DET_MASKS_COEFFS][b, k:].any()
    np.testing.assert_array_equal(got["output1"], protos)
    meta = PatchedMetadata.from_metadata_props({m.key: m.value for m in res.model.metadata_props}, "patched")
    assert meta.masks == {"mask_coeffs": M, "prototypes": "output1"}
    assert DET_MASKS_COEFFS in meta.raw["outputs"] and "output1" in meta.raw["outputs"]


def test_patch_refuses_a_model_that_already_has_det_masks_coeffs(tmp_path):
    model = random_seg_model(num_classes=3)
    model.graph.node.append(onnx.helper.make_node("Identity", ["coeffs"], ["det_masks_coeffs"]))
    path = _save(model, tmp_path / "seg.onnx")
    with pytest.raises(DetcalError, match="det_masks_coeffs"):
        build_patched_model(path, make_artifact(3, input_size=(64, 64)), force=True)


# ------------------------------------------------------------------------------------------
# fit -> patch -> eval end to end
# ------------------------------------------------------------------------------------------
def test_fit_patch_eval_end_to_end(tmp_path, blob_dir, blob_model, blob_data, capsys):
    """The seg blob detector is the blob detector plus coefficient and prototype branches: fitting
    it must give the plain detector's calibration exactly (the coefficients never score), and the
    patched seg model the reference's detections with each box's own coefficients."""
    seg = seg_blob_detector(tmp_path / "seg.onnx", concat="nested")
    cal_seg, cal_det = tmp_path / "seg.json", blob_dir / "seg_test_det.json"
    assert main(["fit", "--model", str(seg), "--data", str(blob_data), "--out", str(cal_seg), "--quiet"]) == 0
    if not cal_det.exists():
        assert main(["fit", "--model", str(blob_model), "--data", str(blob_data), "--out", str(cal_det), "--quiet"]) == 0
    a, b = json.loads(cal_seg.read_text()), json.loads(cal_det.read_text())
    assert a["calibrator"] == b["calibrator"] and a["thresholds"]["score"] == b["thresholds"]["score"]
    assert a["model"]["num_classes"] == 2 and a["model"]["head"]["mask_coeffs"] == M
    patched = tmp_path / "seg.detcal.onnx"
    assert main(["patch", "--model", str(seg), "--calibration", str(cal_seg), "--out", str(patched)]) == 0
    assert "det_masks_coeffs, output1" in capsys.readouterr().out
    ev = tmp_path / "ev"
    assert main(["eval", "--model", str(seg), "--patched", str(patched), "--calibration", str(cal_seg), "--data",
                 str(blob_data), "--split", "val", "--out", str(ev), "--quiet"]) == 0
    res = json.loads((ev / "eval.json").read_text())
    ref, pat = res["columns"]["reference"]["metrics"], res["columns"]["patched"]["metrics"]
    assert pat["ap50"] > 0.3 and pat["ap50"] == pytest.approx(ref["ap50"], abs=1e-3)
    # the coefficients out of the patched model are those of each detection's own box in the raw head
    art = load_artifact(cal_seg)
    imgs = sorted((blob_data.parent / "images" / "val").glob("pos_*.png"))[:4]
    xs, rows = zip(*(preprocess_image(np.asarray(Image.open(p).convert("RGB")), (128, 128), art.preprocess)
                     for p in imgs))
    x, rows = np.stack(xs), np.stack(rows).astype(np.float32)
    pm = onnx.load(str(patched))
    got = dict(zip([o.name for o in pm.graph.output], _session(pm).run(None, {"images": x, "letterbox": rows})))
    raw = _session(onnx.load(str(seg))).run(["output0"], {"images": x})[0]
    ref = pack_fixed(postprocess(raw, "xywh_cls", rows, art.calibration, art.score_thresholds, art.nms,
                                 mask_coeffs=M), art.nms.max_det)
    assert got["num_dets"].sum() > 0
    np.testing.assert_array_equal(got["num_dets"], ref["num_dets"])
    for b in range(len(imgs)):
        k = int(ref["num_dets"][b, 0])
        for i in range(k):
            j = np.argmin(np.abs(got["det_boxes"][b, :k] - ref["det_boxes"][b, i]).sum(axis=1))
            np.testing.assert_allclose(got[DET_MASKS_COEFFS][b, j], ref[DET_MASKS_COEFFS][b, i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("opset", [11, 13])
def test_old_opsets(tmp_path, opset):
    """The inserted seg outputs in the opset-11/12 forms (GatherElements for GatherND, attribute axes)."""
    model = random_seg_model(num_classes=20, opset=opset, concat="flat", seed=opset)
    art = make_artifact(20, calibrator="platt_per_class", thresholds=0.3, input_size=(64, 64), max_det=30)
    for static in (False, True):
        res = build_patched_model(_save(model, tmp_path / "seg.onnx"), art, force=True, static_shapes=static)
        x = np.random.default_rng(opset).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
        rows = np.array([[64, 64, 1, 1, 0, 0]] * 2, np.float32)
        got = dict(zip([o.name for o in res.model.graph.output],
                       _session(res.model).run(None, {"images": x, "letterbox": rows})))
        raw = _session(model).run(["output0"], {"images": x})[0]
        ref = pack_fixed(postprocess(raw, "xywh_cls", rows, art.calibration, art.score_thresholds, art.nms,
                                     mask_coeffs=M), art.nms.max_det)
        assert ref["num_dets"].min() > 0
        assert_same_detections(got, ref, ties_unordered=True, context=f"opset {opset} static={static}")
        order = np.lexsort(ref[DET_MASKS_COEFFS].reshape(-1, M).T), np.lexsort(got[DET_MASKS_COEFFS].reshape(-1, M).T)
        np.testing.assert_allclose(got[DET_MASKS_COEFFS].reshape(-1, M)[order[1]],
                                   ref[DET_MASKS_COEFFS].reshape(-1, M)[order[0]], rtol=0, atol=1e-6)


def test_doctor_reads_the_seg_head_as_its_detector(tmp_path, blob_model, blob_data, capsys):
    """doctor scores rows 4..4+C only: on the seg blob detector it finds what it finds on the blob detector."""
    seg = seg_blob_detector(tmp_path / "seg.onnx")
    reports = []
    for model, out in ((seg, tmp_path / "doc_seg"), (blob_model, tmp_path / "doc_det")):
        main(["doctor", "--model", str(model), "--data", str(blob_data), "--out", str(out), "--quiet", "--json"])
        reports.append(json.loads((out / "doctor.json").read_text()))
    capsys.readouterr()
    seg_checks, det_checks = ([(c["name"], c["status"], c.get("summary")) for c in r["checks"]] for r in reports)
    assert seg_checks == det_checks and len(seg_checks) >= 5
