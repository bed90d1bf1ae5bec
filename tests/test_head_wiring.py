"""The three head families wired end to end: recognition in read_model_info, the runner's decode,
the patched graph (several model outputs) against calib.pipeline, DETR without NMS, inspect.

Patched models of each family (tests/heads_factory.py, random weights) are run on random images
with random letterbox rows and compared with the reference pipeline on the runner's decoded batch:
same detections (counts, classes, boxes within 1e-3 px, scores within 1e-5).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import heads_factory as hf
from artifact_factory import assert_same_detections, make_artifact
from calib.artifact import LAYOUTS, Preprocess
from calib.cli.args import LAYOUT_CHOICES
from calib.letterbox import letterbox_row
from calib.model_info import read_model_info
from calib.pipeline import pack_fixed, postprocess
from calib.preprocess import preprocess_image
from calib.runner import DetectorRunner
from onnx_ops.patch import build_patched_model

SHARED = Path(os.environ.get("DETCAL_SHARED", Path(__file__).resolve().parents[1].parent / "shared")).resolve()

FAMILIES = {
    "yolox_raw": lambda: hf.yolox_raw_model(size=(64, 96), num_classes=3),
    "gfl_multilevel": lambda: hf.gfl_model(num_classes=3),
    "gfl_multilevel_no_batch": lambda: hf.gfl_model(num_classes=3, batch_axis=False, strides=(8, 16, 32)),
    "detr": lambda: hf.detr_model(num_classes=3, queries=100),
    "detr_two_outputs": lambda: hf.detr_model(num_classes=3, queries=100, two_outputs=True),
}


def test_layout_names_in_contract_and_cli():
    assert LAYOUT_CHOICES == LAYOUTS
    assert {"yolox_raw", "gfl_multilevel", "detr"} <= set(LAYOUTS)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("calibrator", ["identity", "platt_per_class", "isotonic_per_class", "platt_box"])
def test_patched_family_equals_reference(tmp_path, family, calibrator):
    path = tmp_path / f"{family}.onnx"
    onnx.save(FAMILIES[family](), str(path))
    info = read_model_info(path)
    size = info.input_size
    assert info.layout == family.replace("_no_batch", "").replace("_two_outputs", "")
    iou = 1.0 if info.layout == "detr" else 0.6
    art = make_artifact(3, calibrator=calibrator, thresholds=0.05, layout=info.layout, input_size=size,
                        iou_threshold=iou, max_det=50, pre_nms_top_k=400)
    result = build_patched_model(path, art, force=True)
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    runner = DetectorRunner(info, Preprocess(), size, batch_size=1)
    rng = np.random.default_rng(len(family))
    found = 0
    for k in range(3):
        img = rng.integers(0, 255, (int(rng.integers(20, 120)), int(rng.integers(20, 120)), 3), dtype=np.uint8)
        x, row = preprocess_image(img, size, Preprocess())
        got = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {info.input_name: x[None], "letterbox": row[None].astype(np.float32)})))
        raw = runner.run_tensor(x[None])
        ref = pack_fixed(postprocess(raw, info.layout, row[None], art.calibration, art.score_thresholds, art.nms),
                         art.nms.max_det)
        assert_same_detections(got, ref, context=f"{family} {calibrator} image {k}")
        found += int(got["num_dets"].sum())
    assert found > 0, "no detection at all: the comparison would be empty"


def test_detr_gets_no_nms_unless_asked():
    from calib.artifact import PostprocessConfig
    from calib.cli import build_parser
    from calib.fitting import FitOptions, postprocess_for_layout

    assert postprocess_for_layout("detr", FitOptions()).iou_threshold == 1.0
    assert postprocess_for_layout("xywh_cls", FitOptions()).iou_threshold == 0.7
    asked = FitOptions(postprocess=PostprocessConfig(iou_threshold=0.5), nms_on_queries=True)
    assert postprocess_for_layout("detr", asked).iou_threshold == 0.5
    # IoU 1.0 keeps two identical queries (NMS would drop one)
    raw = np.array([[[0.5, 0.5, 0.2, 0.2, 3.0, -3.0], [0.5, 0.5, 0.2, 0.2, 2.0, -3.0]]], np.float32)
    from calib.head_decoders import decoded_batch
    batch = decoded_batch("detr", [raw], (64, 64))
    row = letterbox_row(64, 64, (64, 64))[None]
    for iou, n in ((1.0, 2), (0.7, 1)):
        dets = postprocess(batch, "detr", row, None, 0.5, PostprocessConfig(iou_threshold=iou))[0]
        assert len(dets) == n
    args = build_parser().parse_args(["fit", "--model", "m.onnx", "--data", "d.yaml"])
    assert args.iou is None       # not given: fit decides per layout


def test_letterbox_placements_and_raw_scaling():
    row_c = letterbox_row(200, 100, (64, 64), placement="centre")
    row_t = letterbox_row(200, 100, (64, 64), placement="top_left")
    row_b = letterbox_row(200, 100, (64, 64), placement="bottom_right")
    assert row_t[4] == 0 and row_t[5] == 0 and row_c[5] == 16 and row_b[5] == 32
    img = np.full((100, 200, 3), 200, np.uint8)
    pre = Preprocess(pad_value=114, channel_order="BGR", placement="top_left", scale="none")
    x, row = preprocess_image(img, (64, 64), pre)
    assert x[:, 0, 0].tolist() == [200.0] * 3 and x[:, 63, 0].tolist() == [114.0] * 3   # content top, pad below
    pico = Preprocess(pad_value=0, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), scale="none")
    x, _ = preprocess_image(img, (64, 64), pico)
    np.testing.assert_allclose(x[:, 32, 32], (200 - np.array(pico.mean)) / np.array(pico.std), rtol=1e-6)
    for p in (pre, pico, Preprocess(), Preprocess(placement="bottom_right")):
        assert Preprocess.from_artifact(p.to_artifact()) == p


def _cli(*argv) -> int:
    from calib.cli import main

    return main(list(argv))


def test_inspect_exits_0_on_every_shared_model(capsys):
    models = sorted((SHARED / "fixtures").glob("*.onnx")) + sorted((SHARED / "real" / "models").glob("*.onnx"))
    if not models:
        pytest.skip(f"no models under {SHARED} (../shared is outside the project; set DETCAL_SHARED)")
    for m in models:
        assert _cli("inspect", str(m)) == 0, m
        out = capsys.readouterr().out
        assert "head: " in out and "head: not recognised" not in out, out
        assert "NOT covered" not in out.split("onnxruntime CUDA")[0], out     # CPU never "NOT covered"


def test_inspect_reports_quantized_ops_as_not_in_the_table(tmp_path, capsys):
    """A dynamically quantized model (ConvInteger, DynamicQuantizeLinear) is covered on CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, q = tmp_path / "m.onnx", tmp_path / "m_int8.onnx"
    onnx.save(hf.yolox_raw_model(size=(64, 64), num_classes=2), str(src))
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= ops
    assert _cli("inspect", str(q)) == 0
    out = capsys.readouterr().out
    cpu = out.split("onnxruntime CPU")[1].split("onnxruntime CUDA")[0]
    assert cpu.startswith("    covered") or "covered" in cpu.splitlines()[0]
    assert "ConvInteger" in cpu and "not in the table" in cpu and "NOT covered" not in out
    assert "head: yolox_raw" in out


# ------------------------------------------------------------------------------------------
# the real YOLOX-nano and PicoDet-S: fit -> patch -> the patched model equals the reference
# ------------------------------------------------------------------------------------------
REAL_PRE = {
    "yolox_nano_coco_416.onnx": Preprocess(pad_value=114, channel_order="BGR", placement="top_left", scale="none"),
    "picodet_s_coco_320.onnx": Preprocess(pad_value=0, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                                          scale="none"),
}


@pytest.mark.parametrize("name", sorted(REAL_PRE))
def test_real_model_fit_patch_equals_reference(tmp_path, name):
    from calib.fitting import FitOptions, fit
    from calib.images import read_image_rgb

    model = SHARED / "real" / "models" / name
    val = SHARED / "real" / "coco_train" / "images" / "val"
    if not model.exists() or not val.is_dir():
        pytest.skip(f"{model} or {val} absent (../shared/real is outside the project; set DETCAL_SHARED)")
    images = sorted(val.glob("*.jpg"))
    pos = [p for p in images if "_" not in p.stem][:16]
    neg = [p for p in images if "_" in p.stem][:8]
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(str(p) for p in pos + neg) + "\n")
    names = (SHARED / "real" / "coco80.names").read_text().split("\n")[:80]
    pre = REAL_PRE[name]
    result = fit(model, listing, out=tmp_path / "calibration.json", preprocess=pre, names=names,
                 options=FitOptions(folds=2, calibrator="temperature"), threads=1, progress=False)
    art = result.artifact
    assert art.model["layout"] in ("yolox_raw", "gfl_multilevel") and art.preprocess == pre
    patched = build_patched_model(model, art)
    sess = ort.InferenceSession(patched.model.SerializeToString(), providers=["CPUExecutionProvider"])
    info = read_model_info(model)
    runner = DetectorRunner(info, pre, info.input_size, batch_size=1)
    for p in pos[:3]:
        x, row = preprocess_image(read_image_rgb(p), info.input_size, pre)
        got = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {info.input_name: x[None], "letterbox": row[None].astype(np.float32)})))
        ref = pack_fixed(postprocess(runner.run_tensor(x[None]), info.layout, row[None], art.calibration,
                                     art.score_thresholds, art.nms), art.nms.max_det)
        assert_same_detections(got, ref, context=f"{name} {p.name}")
        assert got["num_dets"][0, 0] > 0          # trained models find the objects of these photos
