"""The examples run: the layout examples at smoke-test size (fit -> patch -> eval for all three
layouts), the end2end conversion of the committed detector, and the YOLOv8n fixture example."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calib.layouts import decode  # noqa: E402
from calib.model_info import read_model_info  # noqa: E402
from calib.preprocess import Preprocess, preprocess_image  # noqa: E402
from examples.detector import scenes  # noqa: E402
from examples.detector.to_end2end import convert  # noqa: E402

MODELS = ROOT / "examples" / "models"
FIXTURES = ROOT.parent / "shared" / "fixtures"


def _session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _batch(size: int, n: int = 2) -> np.ndarray:
    imgs = [scenes.positive_scene((11, i))[0] for i in range(n - 1)] + [scenes.negative_scene((11, 99))]
    return np.stack([preprocess_image(im, (size, size), Preprocess())[0] for im in imgs]).astype(np.float32)


@pytest.mark.parametrize("size", [320, 208])
def test_end2end_is_top_k_of_the_xywh_cls_decode(size, tmp_path):
    suffix = "" if size == 320 else f"_{size}"
    src, committed = MODELS / f"detector_xywh_cls{suffix}.onnx", MODELS / f"detector_end2end{suffix}.onnx"
    fresh = convert(src, tmp_path / "e2e.onnx", k=100)
    assert fresh.read_bytes() == committed.read_bytes(), f"{committed} is not what to_end2end.py makes from {src}"

    info = read_model_info(committed)
    assert info.layout == "end2end" and info.num_classes == 5 and info.dynamic_batch
    assert info.output_shape[1:] == (100, 6) and info.input_size == (size, size)
    m_src, m_dst = onnx.load(str(src)), onnx.load(str(committed))
    assert [o.version for o in m_dst.opset_import] == [o.version for o in m_src.opset_import]
    meta_src, meta_dst = ({p.key: p.value for p in m.metadata_props} for m in (m_src, m_dst))
    assert meta_dst["layout"] == "end2end" and meta_dst["names"] == meta_src["names"]
    assert all(meta_dst[k] == v for k, v in meta_src.items() if k != "layout")
    onnx.checker.check_model(m_dst, full_check=True)

    x = _batch(size, n=3)
    raw = _session(src).run(None, {"images": x})[0]
    e2e = _session(committed).run(None, {"images": x})[0]
    assert e2e.shape == (3, 100, 6)
    dec = decode(raw, "xywh_cls")
    best, cls = dec.scores.max(-1), dec.scores.argmax(-1)
    for b in range(3):
        top = np.sort(best[b])[::-1][:100]
        np.testing.assert_allclose(e2e[b, :, 4], top, rtol=0, atol=1e-6)      # top-K scores, sorted
        for row in e2e[b]:                                                    # each row is one candidate's decode
            cand = np.nonzero(best[b] == row[4])[0]
            ok = [j for j in cand if np.allclose(dec.boxes_xyxy[b, j], row[:4], atol=1e-3) and cls[b, j] == row[5]]
            assert ok, f"image {b}: row {row} matches no decoded candidate"


def test_layout_examples_small(tmp_path, capsys):
    from examples.layouts import run as layouts

    rc = layouts.main(["--layout", "all", "--small", "--in-process", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    for cmd in ("$ detcal fit", "$ detcal patch", "$ detcal eval"):
        assert out.count(cmd) == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"xywh_cls", "xywh_obj_cls", "end2end"}
    for layout in summary:
        work = tmp_path / layout
        art = json.loads((work / "calibration.json").read_text())
        assert art["model"]["layout"] == layout and art["model"]["input_size"] == [320, 320]
        assert (work / f"detector_{layout}.detcal.onnx").is_file()
        ev = json.loads((work / "eval" / "eval.json").read_text())
        assert ev["data"]["n_images"] == 20 and ev["data"]["n_negative_images"] == 10
        raw, pat = ev["columns"]["raw"]["metrics"], ev["columns"]["patched"]["metrics"]
        assert 0.7 <= pat["recall"] <= 1.0 and pat["recall"] >= raw["recall"] - 0.15, (layout, raw, pat)
        assert 0.7 <= pat["ap50_at_op"] <= 1.0 and 0.0 < pat["precision"] <= 1.0
        assert 0.0 <= pat["dece"] <= 0.3 and 0.0 <= pat["fp_per_negative_image"] <= raw["fp_per_negative_image"] + 0.5


def test_layout_example_missing_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from examples.layouts import run as layouts

    monkeypatch.setattr(layouts, "MODELS", tmp_path)
    assert layouts.main(["--layout", "end2end", "--small", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "end2end model is missing" in err and "to_end2end.py" in err


@pytest.mark.skipif(not (FIXTURES / "yolov8n_dynamic.onnx").exists(),
                    reason=f"fixture exports not found at {FIXTURES} (they live beside the repository)")
def test_yolov8n_fixture_example(tmp_path, capsys):
    from examples.yolov8n_fixture import run as y8

    assert y8.main(["--imgsz", "320", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "same detections" in out
    assert (tmp_path / "yolov8n_dynamic.detcal.onnx").is_file() and (tmp_path / "calibration.json").is_file()
