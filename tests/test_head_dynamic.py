"""Head families at dynamic and non-square input sizes, NanoDet-Plus's single output, and
fit -> patch -> eval end to end for NanoDet-Plus (dynamic height/width) and DETR (one and two outputs).

Dynamic models (tests/heads_factory.py, `dynamic=True`) are patched once; the patched graph builds
its grid from the image input's run-time shape and must equal calib.pipeline on the runner's
decode at every size it is fed (Hypothesis over sizes). Fixed non-square models (800x608,
608x800, ...) get their grids as constants and must equal it too.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heads_factory as hf
from artifact_factory import assert_same_detections, make_artifact
from calib.artifact import Preprocess
from calib.errors import DetcalError
from calib.model_info import read_model_info
from calib.pipeline import pack_fixed, postprocess
from calib.preprocess import preprocess_image
from calib.runner import DetectorRunner
from onnx_ops.patch import build_patched_model
from synthetic import write_blob_dataset

DYNAMIC = {
    "yolox_raw": lambda: hf.yolox_raw_model(num_classes=3, dynamic=True),
    "gfl_multilevel": lambda: hf.gfl_model(num_classes=3, dynamic=True),
    "nanodet_plus": lambda: hf.nanodet_plus_model(num_classes=3, dynamic=True),
    "detr": lambda: hf.detr_model(num_classes=3, queries=100, two_outputs=True, dynamic=True),
}


def _run_patched(sess, info, art, size, img):
    """(patched outputs, reference outputs) for one image at the serving size `size`."""
    x, row = preprocess_image(img, size, Preprocess())
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {info.input_name: x[None], "letterbox": row[None].astype(np.float32)})))
    runner = DetectorRunner(info, Preprocess(), size, batch_size=1, session=_raw_session(str(info.path)))
    raw = runner.run_tensor(x[None])
    ref = pack_fixed(postprocess(raw, info.layout, row[None], art.calibration, art.score_thresholds, art.nms),
                     art.nms.max_det)
    return got, ref


@functools.lru_cache(maxsize=8)
def _raw_session(path: str):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=4)
def _patched_dynamic(family: str, tmp: str):
    from pathlib import Path

    path = Path(tmp) / f"{family}_dynamic.onnx"
    onnx.save(DYNAMIC[family](), str(path))
    info = read_model_info(path)
    assert info.input_size is None and info.layout == family.replace("nanodet_plus", "gfl_multilevel")
    assert "counts" not in info.head_params            # no level sizes of one size are kept
    art = make_artifact(3, calibrator="platt_per_class", thresholds=0.05, layout=info.layout, input_size=(128, 128),
                        iou_threshold=0.6, max_det=50, pre_nms_top_k=400)
    result = build_patched_model(path, art, force=True)
    assert result.head.input_hw is None and result.head.n_static is None
    ops = {n.op_type for n in result.inserted}
    assert {"Shape", "Range", "Expand"} <= ops or (family == "detr" and "Shape" in ops)   # grid / scale at run time
    image = next(i for i in result.model.graph.input if i.name == info.input_name)
    assert not image.type.tensor_type.shape.dim[2].HasField("dim_value")      # still dynamic
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, info, art


@pytest.fixture(scope="module")
def dyn_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dynamic_heads"))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(family=st.sampled_from(sorted(DYNAMIC)), hc=st.integers(2, 7), wc=st.integers(2, 7), extra=st.integers(0, 31),
       seed=st.integers(0, 2**31 - 1))
def test_dynamic_model_patched_equals_reference_at_every_size(dyn_dir, family, hc, wc, extra, seed):
    """One patched dynamic model per family, run at many (H, W): square, non-square, and sizes that
    are no multiple of any stride (ceil grids, as the backbones give them)."""
    size = (32 * hc + extra, 32 * wc + (31 - extra))
    sess, info, art = _patched_dynamic(family, dyn_dir)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (int(rng.integers(20, 200)), int(rng.integers(20, 200)), 3), dtype=np.uint8)
    got, ref = _run_patched(sess, info, art, size, img)
    assert_same_detections(got, ref, context=f"{family} at {size[0]}x{size[1]}")


def test_dynamic_models_find_something(dyn_dir):
    """The comparison above is not vacuous: the random heads give detections at threshold 0.05."""
    img = np.random.default_rng(1).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    for family in sorted(DYNAMIC):
        sess, info, art = _patched_dynamic(family, dyn_dir)
        found = 0
        for size in ((96, 160), (160, 96)):
            got, ref = _run_patched(sess, info, art, size, img)
            assert_same_detections(got, ref, context=f"{family} {size}")
            found += int(got["num_dets"].sum())
        assert found > 0, family


@pytest.mark.parametrize("family", ["yolox_raw", "nanodet_plus"])
def test_dynamic_model_fixed_shape_variant_equals_reference(tmp_path, family):
    """--static-shapes (the TensorRT graph: no NonZero, no data-dependent Slice) over a run-time grid."""
    path = tmp_path / f"{family}.onnx"
    onnx.save(DYNAMIC[family](), str(path))
    info = read_model_info(path)
    art = make_artifact(3, calibrator="platt_per_class", thresholds=0.05, layout=info.layout, input_size=(128, 128),
                        iou_threshold=0.6, max_det=50, pre_nms_top_k=400)
    result = build_patched_model(path, art, force=True, static_shapes=True)
    assert "NonZero" not in {n.op_type for n in result.inserted}
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    img = np.random.default_rng(2).integers(0, 255, (120, 70, 3), dtype=np.uint8)
    for size in ((128, 128), (100, 200)):
        got, ref = _run_patched(sess, info, art, size, img)
        assert_same_detections(got, ref, context=f"{family} static shapes {size}")
        assert got["num_dets"].sum() > 0


NON_SQUARE = {
    "yolox_800x608": lambda: hf.yolox_raw_model(size=(800, 608), num_classes=3),
    "yolox_608x800": lambda: hf.yolox_raw_model(size=(608, 800), num_classes=3),
    "yolox_ceil_200x136": lambda: hf.yolox_raw_model(size=(200, 136), num_classes=3, ceil=True),
    "gfl_224x160": lambda: hf.gfl_model(size=(224, 160), num_classes=3),
    "gfl_160x224": lambda: hf.gfl_model(size=(160, 224), num_classes=3),
    "nanodet_plus_160x224": lambda: hf.nanodet_plus_model(size=(160, 224), num_classes=3),
    "nanodet_plus_224x168": lambda: hf.nanodet_plus_model(size=(224, 168), num_classes=3),
    "detr_96x64": lambda: hf.detr_model(size=(96, 64), num_classes=3, queries=100, two_outputs=True),
}


@pytest.mark.parametrize("name", sorted(NON_SQUARE))
def test_non_square_fixed_model_patched_equals_reference(tmp_path, name):
    path = tmp_path / f"{name}.onnx"
    onnx.save(NON_SQUARE[name](), str(path))
    info = read_model_info(path)
    size = info.input_size
    assert size[0] != size[1]
    art = make_artifact(3, calibrator="platt_per_class", thresholds=0.05, layout=info.layout, input_size=size,
                        iou_threshold=1.0 if info.layout == "detr" else 0.6, max_det=50, pre_nms_top_k=400)
    result = build_patched_model(path, art, force=True)
    assert result.head.input_hw == tuple(size)
    assert "Range" not in {n.op_type for n in result.inserted}      # fixed size: grid constants
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    found = 0
    for k in range(2):
        img = rng.integers(0, 255, (int(rng.integers(40, 300)), int(rng.integers(40, 300)), 3), dtype=np.uint8)
        got, ref = _run_patched(sess, info, art, size, img)
        assert_same_detections(got, ref, context=f"{name} image {k}")
        found += int(got["num_dets"].sum())
    assert found > 0


# ------------------------------------------------------------------------------------------
# fit -> patch -> eval end to end (blob detectors of the families, tests/synthetic.py scenes)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blob_data3(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blob3"), n_pos=24, n_neg=16, num_classes=3, seed=5)


@pytest.fixture(scope="module")
def blob_data2(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blob2"), n_pos=24, n_neg=16, num_classes=2, seed=6)


def _fit_patch_eval(tmp_path, model_path, data, imgsz=None):
    from calib.evaluate import evaluate
    from calib.fitting import FitOptions, fit
    from onnx_ops.patch import patch_model

    cal = tmp_path / "calibration.json"
    result = fit(model_path, data, out=cal, options=FitOptions(folds=2, calibrator="platt_per_class"), imgsz=imgsz,
                 threads=1, progress=False, log=lambda *a, **k: None)
    patched = patch_model(model_path, cal, tmp_path / "model.detcal.onnx")
    ev = evaluate(model_path, data, patched=patched, calibration=cal, split="val", imgsz=imgsz, progress=False)
    return result.artifact, ev


@pytest.mark.parametrize("two_outputs", [False, True], ids=["one_output", "two_outputs"])
def test_detr_fit_patch_eval_end_to_end(tmp_path, blob_data3, two_outputs):
    path = tmp_path / "detr.onnx"
    onnx.save(hf.blob_detr_model(num_classes=3, two_outputs=two_outputs), str(path))
    art, ev = _fit_patch_eval(tmp_path, path, blob_data3)
    assert art.model["layout"] == "detr" and art.nms.iou_threshold == 1.0           # no NMS on queries
    assert art.model["head"]["outputs"] == (["pred_boxes", "pred_logits"] if two_outputs else ["output"])
    ref, pat = ev.metrics("reference"), ev.metrics("patched")
    assert pat["ap50"] > 0.3, pat["ap50"]                                           # it finds the blobs
    for key in ("ap50", "ap50_95", "recall", "precision", "fp_per_negative_image", "n_kept"):
        assert pat[key] == pytest.approx(ref[key], abs=1e-3), key


def test_dynamic_nanodet_fit_patch_eval_at_the_chosen_size(tmp_path, blob_data2):
    """A dynamic-size NanoDet-Plus head: fit and eval run at --imgsz (as for a dynamic YOLOv8),
    the patched model keeps its dynamic height/width and matches the reference there."""
    path = tmp_path / "nanodet_dynamic.onnx"
    onnx.save(hf.blob_nanodet_model(num_classes=2), str(path))
    from calib.fitting import fit

    with pytest.raises(DetcalError, match="dynamic height/width; pass --imgsz"):
        fit(path, blob_data2, imgsz=None, progress=False, log=lambda *a, **k: None)
    art, ev = _fit_patch_eval(tmp_path, path, blob_data2, imgsz=(128, 128))
    assert art.model["layout"] == "gfl_multilevel" and art.model["input_size"] == [128, 128]
    assert art.model["head"]["single_output"] is True and art.model["head"]["cell_offset"] == 0.0
    ref, pat = ev.metrics("reference"), ev.metrics("patched")
    assert pat["ap50"] > 0.3, pat["ap50"]
    for key in ("ap50", "ap50_95", "recall", "precision", "fp_per_negative_image", "n_kept"):
        assert pat[key] == pytest.approx(ref[key], abs=1e-3), key


@pytest.mark.parametrize("make, layout", [(lambda: hf.nanodet_plus_model(), "gfl_multilevel"),
                                          (lambda: hf.blob_nanodet_model(), "gfl_multilevel"),
                                          (lambda: hf.yolox_raw_model(dynamic=True), "yolox_raw")],
                         ids=["nanodet_plus", "dynamic_nanodet", "dynamic_yolox"])
def test_inspect_names_the_layout_and_why(tmp_path, capsys, make, layout):
    from calib.cli import main

    path = tmp_path / "m.onnx"
    model = make()
    onnx.save(model, str(path))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"head: {layout}" in out, out
    assert ("NanoDet" in out) == (layout == "gfl_multilevel"), out
    dynamic = not model.graph.input[0].type.tensor_type.shape.dim[2].HasField("dim_value")
    assert ("dynamic height/width" in out) == dynamic, out
    assert ("input 640x640" in out) is False        # a dynamic model has no one input size
