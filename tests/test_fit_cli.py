"""`detcal fit` end to end on the blob detector and scenes built by tests/synthetic.py, and the
user errors it must report in one line (exit code 2, no traceback, no calibration.json)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.artifact import FORMAT, FORMAT_VERSION, load_artifact
from calib.cli import main
from synthetic import make_blob_detector, write_blob_dataset

REPORT_FILES = {"reliability.png", "thresholds.png", "report.json", "summary.txt"}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fit(capsys, model, data, out, *extra):
    rc = main(["fit", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet", *map(str, extra)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def check_artifact(out: Path, model: Path, layout: str) -> dict:
    art = load_artifact(out)                                          # validates the schema
    d = json.loads(out.read_text())
    assert d["format"] == FORMAT and d["version"] == FORMAT_VERSION
    m = d["model"]
    assert m["sha256"] == sha256(model)
    assert m["input_size"] == [128, 128] and m["input_name"] == "images"
    assert m["layout"] == layout and m["num_classes"] == 2 and m["class_names"] == ["blob0", "blob1"]
    assert set(d["preprocess"]) >= {"resize", "pad_value", "channel_order", "scaling"}
    assert d["calibrator"]["kind"] in ("identity", "temperature", "temperature_per_class", "platt_per_class",
                                       "isotonic_per_class", "platt_box")
    scores = d["thresholds"]["score"]
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    assert d["thresholds"]["max_negative_rate"] == pytest.approx(0.01)
    assert set(d["nms"]) >= {"iou_threshold", "max_det", "pre_nms_top_k", "multi_label", "class_aware"}
    for phase in ("before", "after"):
        assert isinstance(d["metrics"][phase], dict) and "dece" in d["metrics"][phase]
        assert 0 <= d["metrics"][phase]["dece"] <= 1
    assert art.num_classes == 2
    report = out.with_name(out.stem + "_report")
    assert {p.name for p in report.iterdir()} >= REPORT_FILES
    for png in ("reliability.png", "thresholds.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((report / "report.json").read_text())
    assert "metrics" in rep and "thresholds" in rep
    # the negative-scene certification says what certified what, on how many images (calib.certify)
    t = rep["thresholds"]
    assert t["procedure"] and t["n_negative_images"] == t["n_shape_images"] + t["n_certification_images"] or \
        not t["certified"]
    assert t["shape"] in ("per-class", "global") and t["baseline"] is not None
    # bootstrap intervals by image for before and after
    for phase in ("before", "after"):
        for key in ("dece", "recall", "negative_image_rate"):
            iv = rep["intervals"][phase][key]
            assert iv["low"] is None or iv["low"] <= iv["high"]
    summary = (report / "summary.txt").read_text()
    assert "D-ECE" in summary and "bootstrap interval by image" in summary and "procedure:" in summary
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    return d


def test_fit_both_layouts(tmp_path, capsys, blob_models, blob_data):
    layout, model = blob_models
    out = tmp_path / "calibration.json"
    rc, stdout, err = fit(capsys, model, blob_data, out)
    assert rc == 0, err
    d = check_artifact(out, model, layout)
    assert d["calibrator"]["selection"]["mode"] == "auto"
    assert d["preprocess"] == {"resize": "letterbox", "pad_value": 114, "channel_order": "RGB",
                               "scaling": {"kind": "div255"}}
    for words in ("metric", "before (raw > 0.25)", "after (held-out CV)", "D-ECE", "AP50", "negative images firing"):
        assert words in stdout
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["identity", "temperature", "platt_per_class", "isotonic_per_class"])
def test_fit_explicit_calibrator(tmp_path, capsys, blob_model, blob_data, kind):
    out = tmp_path / "cal.json"
    rc, stdout, err = fit(capsys, blob_model, blob_data, out, "--calibrator", kind, "--folds", 3)
    assert rc == 0, err
    d = check_artifact(out, blob_model, "xywh_cls")
    assert d["calibrator"]["kind"] == kind
    assert d["calibrator"]["selection"]["mode"] == "explicit"
    assert f"calibrator: {kind}" in stdout


def test_fit_records_preprocessing_and_nms_options(tmp_path, capsys, blob_model_obj, blob_data):
    out = tmp_path / "sub" / "cal.json"                                 # missing folders are created
    rc, _, err = fit(capsys, blob_model_obj, blob_data, out, "--resize", "stretch", "--channel-order", "BGR",
                     "--pad-value", 0, "--iou", 0.6, "--max-det", 50, "--pre-nms-top-k", 500, "--multi-label",
                     "--calibrator", "temperature_per_class")
    assert rc == 0, err
    d = check_artifact(out, blob_model_obj, "xywh_obj_cls")
    assert d["preprocess"]["resize"] == "stretch" and d["preprocess"]["channel_order"] == "BGR"
    assert d["preprocess"]["pad_value"] == 0
    assert d["nms"]["iou_threshold"] == pytest.approx(0.6) and d["nms"]["max_det"] == 50
    assert d["nms"]["pre_nms_top_k"] == 500 and d["nms"]["multi_label"] is True


def detcal_exe():
    exe = Path(sys.executable).parent / "detcal"
    return str(exe) if exe.exists() else shutil.which("detcal")


def test_fit_subprocess(tmp_path, blob_model, blob_data):
    exe = detcal_exe()
    assert exe, "the detcal console script is not installed"
    out = tmp_path / "calibration.json"
    proc = subprocess.run([exe, "fit", "--model", str(blob_model), "--data", str(blob_data), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_artifact(out, blob_model, "xywh_cls")
    assert "D-ECE" in proc.stdout and "after (held-out CV)" in proc.stdout
    assert "running model" in proc.stderr                              # the progress bar
    # a user error through the real entry point: one line, exit code 2
    bad = subprocess.run([exe, "fit", "--model", str(tmp_path / "nope.onnx"), "--data", str(blob_data),
                          "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [f"detcal: error: model file not found: {tmp_path / 'nope.onnx'}"]
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------------ bad input


def tiny_model_with_output(path, out_shape):
    """A valid ONNX model with an image input [1, 3, 32, 32] and one float output of out_shape."""
    n = int(np.prod(out_shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),                 # scalar
        helper.make_node("Mul", ["m", "ones"], ["output0"]),
    ]
    inits = [numpy_helper.from_array(np.ones(out_shape, np.float32), "ones")]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    assert n > 0
    return path


def nan_blob_model(path, src):
    """The blob detector with its output multiplied by NaN (a broken export)."""
    model = onnx.load(str(src))
    g = model.graph
    for node in g.node:
        node.output[:] = ["pre_output0" if o == "output0" else o for o in node.output]
    g.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_const"))
    g.node.append(helper.make_node("Mul", ["pre_output0", "nan_const"], ["output0"]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, blob_model):
    root = tmp_path_factory.mktemp("bad")
    corrupt = root / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "empty_folder").mkdir()
    (root / "a_file").write_text("not a folder\n")
    (root / "blocked_report").write_text("a file where the report folder goes\n")
    empty = root / "empty_yaml"
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "labels" / "val").mkdir(parents=True)
    (empty / "data.yaml").write_text("path: .\nval: images/val\nnames:\n  0: blob0\n  1: blob1\n")
    model_copy = root / "model_copy.onnx"
    shutil.copy(blob_model, model_copy)
    return {
        "root": root,
        "corrupt": corrupt,
        "odd": tiny_model_with_output(root / "odd.onnx", (1, 7)),
        "nan": nan_blob_model(root / "nan.onnx", blob_model),
        "data3": write_blob_dataset(root / "data3", num_classes=3, n_pos=4, n_neg=2),
        "negatives_only": write_blob_dataset(root / "negonly", n_pos=0, n_neg=4),
        "model_copy": model_copy,
        "empty_yaml": empty / "data.yaml",
    }


BAD = {
    # case: (model, data, out, words expected in the message)
    "missing model": ("{root}/missing.onnx", "{data}", "{tmp}/calibration.json", ["model file not found", "missing.onnx"]),
    "corrupt model": ("{corrupt}", "{data}", "{tmp}/calibration.json", ["corrupt.onnx"]),
    "outputs fit no layout": ("{odd}", "{data}", "{tmp}/calibration.json", ["odd.onnx", "[1, 7]", "xywh_cls"]),
    "class count mismatch": ("{model}", "{data3}", "{tmp}/calibration.json", ["class count", "2", "3"]),
    "empty dataset folder": ("{model}", "{root}/empty_folder", "{tmp}/calibration.json", ["empty_folder"]),
    "empty dataset (yaml, no images)": ("{model}", "{empty_yaml}", "{tmp}/calibration.json",
                                        ["no images found", "data.yaml"]),
    "no positive images": ("{model}", "{negatives_only}", "{tmp}/calibration.json", ["no image has a labelled object"]),
    "NaN in model outputs": ("{nan}", "{data}", "{tmp}/calibration.json", ["nan.onnx", "NaN"]),
    "out parent is a file": ("{model}", "{data}", "{root}/a_file/calibration.json", ["a_file"]),
    "report folder blocked by a file": ("{model}", "{data}", "{root}/blocked.json", ["blocked_report"]),
    "out is the model": ("{model_copy}", "{data}", "{model_copy}", ["model_copy.onnx", "same as the input"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys, bad_inputs, blob_model, blob_data):
    fmt = {k: v for k, v in bad_inputs.items()}
    fmt.update(tmp=tmp_path, model=blob_model, data=blob_data)
    model, data, out, words = (BAD[case][0].format(**fmt), BAD[case][1].format(**fmt),
                               BAD[case][2].format(**fmt), BAD[case][3])
    before = sha256(model) if Path(model).exists() else None
    rc, stdout, err = fit(capsys, model, data, out)
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("detcal: error: "), err
    assert "Traceback" not in err + stdout
    for w in words:
        assert w in lines[0], (w, lines[0])
    if Path(out).resolve() == Path(model).resolve():
        assert sha256(model) == before                                 # the input was not touched
    else:
        assert not Path(out).exists()
        report = Path(out).with_name(Path(out).stem + "_report")
        assert not report.is_dir()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


def test_bad_option_values(tmp_path, capsys, blob_model, blob_data):
    for extra in (["--max-negative-rate", "1.5"], ["--folds", "1"], ["--mean", "0,0,0", "--std", "0,1,1"],
                  ["--pad-value", "300"], ["--fit-floor", "1.5"]):
        rc, _, err = fit(capsys, blob_model, blob_data, tmp_path / "c.json", *extra)
        assert rc == 2 and err.startswith("detcal: error: ") and len(err.splitlines()) == 1, (extra, err)
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("imgsz", ["0", "-5", "0x640", "abc"])
def test_bad_imgsz_is_a_usage_error(capsys, blob_model, blob_data, tmp_path, imgsz):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--model", str(blob_model), "--data", str(blob_data), "--out", str(tmp_path / "c.json"),
              f"--imgsz={imgsz}"])
    assert exc.value.code == 2
    assert "--imgsz" in capsys.readouterr().err


def test_after_numbers_fit_each_fold_above_its_own_floor(blob_model, blob_data):
    """fit's held-out "after" scores: per fold of cross_validation.image_folds, the calibrator fitted
    on the other folds' detections above their own fitting floor on positive images (the negative images
    certify the thresholds), applied to the held-out detections,
    0 at or below that floor (nothing there survives); auto selects inside every fold (nested)."""
    from calib.cross_validation import fold_ids, image_folds
    from calib.fitting import FitOptions, _subset_images, fitting_floor
    from calib.fitting import fit as fit_model
    from calib.floor_selection import above_floor, fit_kind

    opts = FitOptions(calibrator="platt_per_class", folds=3, seed=4)
    result = fit_model(blob_model, blob_data, options=opts, progress=False)
    m = result.matched
    image_fold = image_folds(m.n_images, 3, 4)
    np.testing.assert_array_equal(fold_ids(m.image_index, m.n_detections, 3, 4, n_groups=m.n_images),
                                  image_fold[m.image_index])
    expected = np.empty(m.n_detections)
    for f in range(3):
        sub = _subset_images(m, image_fold != f)
        floor = fitting_floor(sub, opts)
        up = above_floor(sub.scores, sub.classes, floor) & ~sub.negative_image_mask[sub.image_index]
        cal = fit_kind("platt_per_class", sub.scores[up], sub.classes[up], sub.is_tp[up], None, m.num_classes)
        test = image_fold[m.image_index] == f
        expected[test] = np.where(above_floor(m.scores[test], m.classes[test], floor),
                                  cal.transform(m.scores[test], m.classes[test]), 0.0)
    np.testing.assert_allclose(result.oof_scores, expected, rtol=1e-12, atol=1e-12)
    assert not np.any(result.oof_survive & (result.oof_scores == 0))
    auto = fit_model(blob_model, blob_data, options=FitOptions(folds=3, seed=4), progress=False)
    if auto.selection.get("n_folds"):
        assert auto.selection["n_folds"] == 3 and len(auto.selection["nested"]["chosen_per_fold"]) == 3


def test_out_naming_one_of_the_data_sets_files_is_refused(tmp_path, capsys, blob_model):
    """fit --out pointing at one of the data set's own images or label files is refused before the
    model runs; the file stays as it was."""
    from calib.data import load_dataset

    data = write_blob_dataset(tmp_path / "d", n_pos=3, n_neg=2)
    sample = next(s for s in load_dataset(data).samples if s.label_path is not None)
    for target in (sample.image_path, sample.label_path):
        before = sha256(target)
        rc, _, err = fit(capsys, blob_model, data, target)
        assert rc == 2 and "same as the input" in err and len(err.splitlines()) == 1, err
        assert sha256(target) == before


@pytest.mark.parametrize("extra,words", [(["--seed", "-1"], ["--seed", "must be >= 0"]),
                                         (["--max-det", "0"], ["--max-det", "must be >= 1"]),
                                         (["--pre-nms-top-k", "-3"], ["--pre-nms-top-k", "must be >= 1"])])
def test_integer_options_are_checked_before_any_work(tmp_path, capsys, blob_model, blob_data, extra, words):
    """Out-of-range integers are argparse's usage errors naming the option, before the model runs."""
    with pytest.raises(SystemExit) as e:
        main(["fit", "--model", str(blob_model), "--data", str(blob_data), "--out", str(tmp_path / "c.json"), *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not (tmp_path / "c.json").exists()


def test_a_report_inside_the_data_sets_image_folder_is_refused(tmp_path, capsys, blob_model):
    """fit's report folder (or eval's --out) inside a folder of the data set's images would add its
    plots to the data set as images on the next run: refused before the model runs."""
    from calib.data import load_dataset

    data = write_blob_dataset(tmp_path / "d", n_pos=3, n_neg=2)
    folder = load_dataset(data).samples[0].image_path.parent
    rc, _, err = fit(capsys, blob_model, data, folder / "cal.json")
    assert rc == 2 and "a folder of the data set's images" in err and len(err.splitlines()) == 1, err
    assert not (folder / "cal.json").exists() and not (folder / "cal_report").exists()
    rc, _, err = fit(capsys, blob_model, data, folder / "sub" / "cal.json")
    assert rc == 2 and "a folder of the data set's images" in err, err


def test_an_interrupt_while_writing_leaves_the_previous_outputs_whole(tmp_path, capsys, blob_model, monkeypatch):
    """The report is staged and swapped in whole and calibration.json comes last: Ctrl-C while the
    second fit writes its plots leaves the first fit's calibration and report, and no staging folder."""
    import calib.fit_report as fit_report

    data = write_blob_dataset(tmp_path / "d", n_pos=4, n_neg=3)
    out = tmp_path / "o" / "cal.json"
    assert fit(capsys, blob_model, data, out)[0] == 0
    report = out.with_name("cal_report")
    before = {p.name: sha256(p) for p in [out, *report.iterdir()]}

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_report, "save_operating_curves", interrupted)     # after reliability.png is written
    rc = main(["fit", "--model", str(blob_model), "--data", str(data), "--out", str(out), "--quiet", "--seed", "3"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert {p.name: sha256(p) for p in [out, *report.iterdir()]} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["cal.json", "cal_report"]


def test_coco_images_elsewhere_are_found_with_the_images_option(tmp_path, capsys, blob_model):
    """A COCO JSON whose images are not in a usual place: the error names --images, and fit (eval
    and doctor take the same option) runs with it; --images with another kind of --data is refused."""
    import json as _json

    from PIL import Image

    from calib.data import load_dataset

    data = write_blob_dataset(tmp_path / "d", n_pos=4, n_neg=3)
    ds = load_dataset(data)
    images, anns = [], []
    for i, s in enumerate(ds.samples):
        w, h = Image.open(s.image_path).size
        images.append({"id": i, "file_name": s.image_path.name, "width": w, "height": h})
        for j, (b, c) in enumerate(zip(s.gt_boxes_xyxy_px(w, h), s.gt_classes)):
            anns.append({"id": 100 * i + j, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    coco = tmp_path / "ann" / "val.json"
    coco.parent.mkdir()
    coco.write_text(_json.dumps({"images": images, "annotations": anns,
                                 "categories": [{"id": k + 1, "name": n} for k, n in enumerate(ds.names)]}))
    rc, _, err = fit(capsys, blob_model, coco, tmp_path / "a.json")
    assert rc == 2 and "--images" in err, err
    folder = ds.samples[0].image_path.parent
    rc, _, err = fit(capsys, blob_model, coco, tmp_path / "b.json", "--images", str(folder))
    assert rc == 0, err
    rc, _, err = fit(capsys, blob_model, data, tmp_path / "c.json", "--images", str(folder))
    assert rc == 2 and "goes with a COCO .json --data" in err, err
