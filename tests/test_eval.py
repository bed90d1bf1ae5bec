"""`detcal eval` on the blob detector: outputs, consistency, AP against pycocotools, bad input."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from artifact_factory import make_artifact
from calib.cli import main
from calib.evaluate import evaluate
from synthetic import write_blob_dataset

patch = pytest.importorskip("onnx_ops.patch")

OP_KEYS = ("precision", "recall", "dece", "laece0", "fp_per_negative_image", "negative_image_rate",
           "negative_image_rate_above_0.8", "n_kept")


@pytest.fixture(scope="module")
def identity_patched(blob_dir, blob_model) -> Path:
    """The blob detector patched with identity calibration and threshold 0.25 (= the raw model at conf 0.25)."""
    art = make_artifact(2, calibrator="identity", thresholds=0.25, input_size=(128, 128))
    return patch.patch_model(blob_model, art, blob_dir / "blob_identity.detcal.onnx")


@pytest.fixture(scope="module")
def platt(blob_dir) -> tuple[Path, object]:
    art = make_artifact(2, calibrator="platt_per_class", thresholds=0.3, input_size=(128, 128), seed=3)
    path = blob_dir / "platt_calibration.json"
    art.save(path)
    return path, art


@pytest.fixture(scope="module")
def platt_patched(blob_dir, blob_model, platt) -> Path:
    return patch.patch_model(blob_model, platt[1], blob_dir / "blob_platt.detcal.onnx")


@pytest.fixture(scope="module")
def identity_result(blob_model, blob_data, identity_patched):
    return evaluate(blob_model, blob_data, patched=identity_patched, split="val", conf=0.25, progress=False)


def run_cli(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_writes_table_json_and_plots(tmp_path, blob_model, blob_data, platt, platt_patched, capsys):
    out = tmp_path / "ev"
    rc, stdout, _ = run_cli(["eval", "--model", str(blob_model), "--patched", str(platt_patched), "--calibration",
                             str(platt[0]), "--data", str(blob_data), "--split", "val", "--out", str(out), "--quiet"], capsys)
    assert rc == 0
    assert "AP50" in stdout and "patched" in stdout and "latency" in stdout
    doc = json.loads((out / "eval.json").read_text())
    assert doc["format"] == "detcal.eval"
    assert set(doc["columns"]) == {"raw", "reference", "patched"}
    for name, col in doc["columns"].items():
        m = col["metrics"]
        for key in ("ap50", "ap50_95", "ap50_at_op", "precision", "recall"):
            assert 0.0 <= m[key] <= 1.0, (name, key)
        assert m["ap50_95"] <= m["ap50"]
        assert m["latency_model_ms_median"] > 0 and m["latency_total_ms_p90"] >= m["latency_model_ms_median"] * 0
        # bootstrap intervals by image around each column's own numbers
        iv = m["intervals"]["recall"]
        assert iv["estimate"] == pytest.approx(m["recall"]) and iv["low"] <= iv["estimate"] <= iv["high"]
        assert m["intervals"]["negative_image_rate"]["estimate"] == pytest.approx(m["negative_image_rate"])
        if name != "raw":   # the recall a single raw threshold gets at the same negative-image rate
            assert m["global_baseline"]["negative_rate"] <= m["negative_image_rate"] + 1e-12
    assert "bootstrap interval by image" in stdout and "best single raw threshold in hindsight" in stdout
    assert doc["columns"]["raw"]["metrics"]["latency_post_ms_median"] > 0
    assert doc["columns"]["patched"]["metrics"]["latency_post_ms_median"] is None
    assert doc["data"]["n_images"] == 40 and doc["data"]["n_negative_images"] == 16
    for png in ("reliability.png", "operating_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_raw_only(tmp_path, blob_model, blob_data, capsys):
    rc, stdout, _ = run_cli(["eval", "--model", str(blob_model), "--data", str(blob_data), "--split", "val",
                             "--out", str(tmp_path / "ev"), "--quiet"], capsys)
    assert rc == 0
    doc = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert list(doc["columns"]) == ["raw"]
    assert doc["settings"]["preprocess_source"] == "defaults"


def test_patched_at_identity_equals_raw_at_conf(identity_result):
    """Identity calibration + threshold 0.25 in the graph = the raw model at conf 0.25, number for number."""
    raw, pat = identity_result.metrics("raw"), identity_result.metrics("patched")
    for key in OP_KEYS:
        assert pat[key] == pytest.approx(raw[key], abs=1e-9), key
    assert pat["ap50"] == pytest.approx(raw["ap50_at_op"], abs=1e-9)
    assert pat["ap50_95"] == pytest.approx(raw["ap50_95_at_op"], abs=1e-9)
    assert raw["ap50"] >= raw["ap50_at_op"] - 1e-9   # the floor only adds low-score detections at the end
    assert identity_result.settings["preprocess_source"] == "patched model metadata"


def test_raw_twice_is_identical(blob_model, blob_data):
    a = evaluate(blob_model, blob_data, split="val", progress=False).metrics("raw")
    b = evaluate(blob_model, blob_data, split="val", progress=False).metrics("raw")
    for key in ("ap50", "ap50_95", "ap50_at_op", *OP_KEYS):
        assert a[key] == b[key], key


def test_reference_matches_patched(blob_model, blob_data, platt, platt_patched):
    r = evaluate(blob_model, blob_data, patched=platt_patched, calibration=platt[0], split="val", progress=False)
    ref, pat = r.metrics("reference"), r.metrics("patched")
    for key in ("ap50", "ap50_95", *OP_KEYS):
        assert pat[key] == pytest.approx(ref[key], abs=1e-3), key
    assert ref["per_class"]["blob0"]["threshold"] == pytest.approx(0.3)


def _coco_ap(result, column: str) -> tuple[float, float]:
    """(AP50:95, AP50) of a column's detections computed by pycocotools."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval_mod = pytest.importorskip("pycocotools.cocoeval")
    images, anns, dets = [], [], []
    for i, (boxes, classes) in enumerate(zip(result.gt_boxes_xyxy, result.gt_classes)):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        for b, c in zip(boxes, classes):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h})
    for i, d in enumerate(result.columns[column].detections):
        for b, s, c in zip(d.boxes_xyxy.astype(np.float64), d.scores.astype(np.float64), d.classes):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_mod.COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = cocoeval_mod.COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100000]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]      # [T, R, K] at area "all", the largest maxDets

    def mean(p):
        return float(p[p > -1].mean())

    return mean(prec), mean(prec[0])


@pytest.mark.parametrize("column", ["raw", "patched"])
def test_ap_agrees_with_pycocotools(identity_result, column):
    ap, ap50 = _coco_ap(identity_result, column)
    m = identity_result.metrics(column)
    assert m["ap50_95"] == pytest.approx(ap, abs=1e-3)
    assert m["ap50"] == pytest.approx(ap50, abs=1e-3)


# ----------------------------------------------------------------------------- bad input


def _not_detcal_outputs(blob_dir, blob_model) -> Path:
    """Claims to be patched (metadata) but has the raw head output."""
    m = onnx.load(str(blob_model))
    e = m.metadata_props.add()
    e.key, e.value = "detcal", "{}"
    p = blob_dir / "fake_patched.onnx"
    onnx.save(m, str(p))
    return p


def _bad_cases(tmp_path, blob_dir, blob_model, blob_data, identity_patched):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    three = write_blob_dataset(tmp_path / "three", n_pos=3, n_neg=1, num_classes=3)
    return {
        "missing model": (["--model", str(tmp_path / "nope.onnx"), "--data", str(blob_data)], "model file not found"),
        "missing data": (["--model", str(blob_model), "--data", str(tmp_path / "nope.yaml")], "not found"),
        "missing patched": (["--model", str(blob_model), "--patched", str(tmp_path / "x.onnx"), "--data", str(blob_data)],
                            "not found"),
        "patched not detcal": (["--model", str(blob_model), "--patched", str(blob_model), "--data", str(blob_data)],
                               "not a detcal-patched model"),
        "patched outputs": (["--model", str(blob_model), "--patched", str(_not_detcal_outputs(blob_dir, blob_model)),
                             "--data", str(blob_data)], "outputs lack num_dets"),
        "model is patched": (["--model", str(identity_patched), "--data", str(blob_data)], "detcal-patched model"),
        "class mismatch": (["--model", str(blob_model), "--data", str(three)], "class count mismatch"),
        "empty dataset": (["--model", str(blob_model), "--data", str(empty), "--names", str(_names(tmp_path))], "no images found"),
        "missing calibration": (["--model", str(blob_model), "--calibration", str(tmp_path / "c.json"),
                                 "--data", str(blob_data)], "calibration file not found"),
    }


def _names(tmp_path) -> Path:
    p = tmp_path / "names.txt"
    p.write_text("blob0\nblob1\n")
    return p


def test_bad_input_is_one_line_exit_2(tmp_path, blob_dir, blob_model, blob_data, identity_patched, capsys):
    for name, (args, needle) in _bad_cases(tmp_path, blob_dir, blob_model, blob_data, identity_patched).items():
        out = tmp_path / f"ev_{name.replace(' ', '_')}"
        rc, _, err = run_cli(["eval", *args, "--split", "val", "--out", str(out), "--quiet"], capsys)
        assert rc == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("detcal: error: "), (name, err)
        assert needle in lines[0], (name, lines[0])
        assert "Traceback" not in err
        assert not (out / "eval.json").exists()


def test_an_interrupted_eval_leaves_no_new_empty_folder(tmp_path, blob_model, blob_data, capsys, monkeypatch):
    """Ctrl-C during eval's model runs: the --out folders it made (empty) go, as a failed fit's do."""
    import calib.evaluate.loop as loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.DetectorRunner, "run_tensor", interrupted)
    out = tmp_path / "a" / "b"
    rc = main(["eval", "--model", str(blob_model), "--data", str(blob_data), "--split", "val", "--out", str(out),
               "--quiet"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
