"""`detcal doctor`: each check fires on a case built to trigger it and stays quiet on a clean one.

Cases are built with the blob detector (tests/synthetic.py): class c fires on squares of colour
c, over 32x32 windows at stride 16. Scenes are drawn here with squares placed exactly on the
window grid, so that a clean case has one well-localised, well-scored detection per object.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from calib.cli import main as cli_main
from calib.doctor import (DoctorOptions, best_possible_recall, diagnose, embed_at_serve_size, kmeans_anchors,
                          read_anchors)
from calib.errors import DetcalError
from calib.artifact import PostprocessConfig
from calib.artifact import Preprocess

from synthetic import COLOURS, make_blob_detector

# one detection per object: neighbouring windows (IoU 1/3) are suppressed
OPTS = DoctorOptions(postprocess=PostprocessConfig(iou_threshold=0.3, mask_padding=False), timing_images=4, bootstrap=50)


def write_scenes(root: Path, scenes, *, num_classes: int = 2, split: str = "val", seed: int = 0) -> Path:
    """scenes: [(name, (w, h), [(cls, x0, y0, side), ...], tint)] -> data.yaml.

    Positive scenes: squares of COLOURS[cls] on a noisy grey background. A scene with no squares is
    a negative; `tint` = (class colour, strength) blends it towards that colour (a uniform surface).
    """
    rng = np.random.default_rng(seed)
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    for name, (w, h), squares, tint in scenes:
        img = np.clip(125 + rng.normal(0, 4, (h, w, 3)), 0, 255)
        lines = []
        for c, x0, y0, s in squares:
            img[y0:y0 + s, x0:x0 + s] = np.asarray(COLOURS[c]) + rng.normal(0, 3, (min(s, h - y0), min(s, w - x0), 3))
            lines.append(f"{c} {(x0 + s / 2) / w:.6f} {(y0 + s / 2) / h:.6f} {s / w:.6f} {s / h:.6f}")
        if tint is not None:
            colour, strength = tint
            img = img * (1 - strength) + np.asarray(COLOURS[colour]) * strength
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(img_dir / f"{name}.png")
        (lab_dir / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {c}: blob{c}" for c in range(num_classes))
    (root / "data.yaml").write_text(f"path: .\n{split}: images/{split}\nnames:\n{names}\n")
    return root / "data.yaml"


def clean_scenes(n_pos: int = 16, n_neg: int = 8, *, side: int = 32, neg_strength: float = 0.15, seed: int = 0):
    """128x128 and 128x96 images (the latter letterboxed with 16 px bars), squares on the window grid,
    away from the edges, classes alternating; weakly tinted negatives."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n_pos):
        w, h = (128, 128) if i % 2 == 0 else (128, 96)
        # windows span [16k, 16k + 32] in input px; the 128x96 content starts at input y 16: multiples of 16 align
        cells = [(x, y) for x in (16, 48, 80) for y in (16, 48, 80) if y + side + 16 <= h]
        picks = rng.choice(len(cells), size=1 + i % 2, replace=False)
        squares = [((i + k) % 2, cells[p][0], cells[p][1], side) for k, p in enumerate(picks)]
        scenes.append((f"pos_{i:03d}", (w, h), squares, None))
    for i in range(n_neg):
        scenes.append((f"neg_{i:03d}", (128, 128), [], (i % 2, neg_strength)))
    return scenes


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    return {
        "root": root,
        "model": make_blob_detector(root / "blob.onnx", gain=20.0),
        "clean": write_scenes(root / "clean", clean_scenes()),
    }


@pytest.fixture(scope="module")
def clean_report(blob):
    return diagnose(blob["model"], blob["clean"], options=OPTS, out_dir=blob["root"] / "clean_out", progress=False)


def make_dynamic_blob_detector(path: Path, *, native: int = 128, gain: float = 20.0) -> Path:
    """The blob detector with dynamic height/width: the box grid is computed from the pooled shape."""
    fixed = make_blob_detector(path.with_suffix(".fixed.onnx"), size=native, gain=gain)
    m = onnx.load(str(fixed))
    g = m.graph
    for d, v in zip(g.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        d.ClearField("dim_value")
        d.dim_param = v
    g.output[0].type.tensor_type.shape.dim[2].ClearField("dim_value")
    g.output[0].type.tensor_type.shape.dim[2].dim_param = "anchors"
    keep = [i for i in g.initializer if i.name not in ("boxes", "flat_shape")]
    del g.initializer[:]
    g.initializer.extend(keep)
    c = lambda name, arr: g.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    c("flat_shape", np.array([0, 3, -1], np.int64))
    c("i2", np.array(2, np.int64))
    c("i3", np.array(3, np.int64))
    c("i0", np.array(0, np.int64))
    c("i1", np.array(1, np.int64))
    c("f16", np.array(16.0, np.float32))
    c("f0", np.array(0.0, np.float32))
    c("f32", np.array(32.0, np.float32))
    c("ax0", np.array([0], np.int64))
    c("ax1", np.array([1], np.int64))
    c("row_shape", np.array([1, 1, -1], np.int64))
    c("hw_slice_s", np.array([2], np.int64))
    c("hw_slice_e", np.array([4], np.int64))
    n = helper.make_node
    grid = [
        n("Shape", ["pooled"], ["pshape"]),
        n("Gather", ["pshape", "i2"], ["gh"]),
        n("Gather", ["pshape", "i3"], ["gw"]),
        n("Slice", ["pshape", "hw_slice_s", "hw_slice_e"], ["ghw"]),
        n("Range", ["i0", "gh", "i1"], ["ry"]),
        n("Range", ["i0", "gw", "i1"], ["rx"]),
        n("Cast", ["ry"], ["ryf"], to=onnx.TensorProto.FLOAT),
        n("Cast", ["rx"], ["rxf"], to=onnx.TensorProto.FLOAT),
        n("Mul", ["ryf", "f16"], ["ry16"]), n("Add", ["ry16", "f16"], ["cy1"]),
        n("Mul", ["rxf", "f16"], ["rx16"]), n("Add", ["rx16", "f16"], ["cx1"]),
        n("Unsqueeze", ["cy1", "ax1"], ["cy2"]), n("Unsqueeze", ["cx1", "ax0"], ["cx2"]),
        n("Expand", ["cy2", "ghw"], ["cyg"]), n("Expand", ["cx2", "ghw"], ["cxg"]),
        n("Reshape", ["cxg", "row_shape"], ["cxr"]), n("Reshape", ["cyg", "row_shape"], ["cyr"]),
        n("Mul", ["cxr", "f0"], ["zr"]), n("Add", ["zr", "f32"], ["wr"]),
        n("Concat", ["cxr", "cyr", "wr", "wr"], ["boxes"], axis=1),
    ]
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(nodes[:1] + grid + nodes[1:])
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def with_anchor_grid(src: Path, dst: Path, anchors) -> Path:
    """A copy of a model with a YOLOv5-style anchor_grid constant (1, na, 1, 1, 2) in its initializers."""
    m = onnx.load(str(src))
    grid = np.asarray(anchors, np.float32).reshape(1, -1, 1, 1, 2)
    m.graph.initializer.append(numpy_helper.from_array(grid, "anchor_grid"))
    onnx.save(m, str(dst))
    return dst


# ------------------------------------------------------------------------------- the clean case

def test_clean_case_flags_nothing(clean_report, blob):
    statuses = {c.name: c.status for c in clean_report.checks}
    assert statuses == {"resolution": "ok", "box_shape": "ok", "letterbox": "ok", "calibration": "ok",
                        "uniform_fp": "ok", "nms_load": "ok", "labels": "ok"}, clean_report.format_text()
    assert clean_report.exit_code == 0
    out = blob["root"] / "clean_out"
    doc = json.loads((out / "doctor.json").read_text())
    assert doc["exit_code"] == 0 and len(doc["checks"]) == 7
    assert {"name", "status", "severity", "finding", "evidence", "fix"} <= set(doc["checks"][0])
    assert (out / "reliability.png").exists()


# ------------------------------------------------------------------------------- 1 resolution

def test_resolution_emulated_on_fixed_model_fires(blob):
    r = diagnose(blob["model"], blob["clean"], serve_size=64, options=OPTS, progress=False)
    c = r.check("resolution")
    assert c.status in ("warn", "fail") and c.evidence["serving_emulated"] is True
    assert c.evidence["recall_drop"] >= 0.05
    assert "emulated" in c.finding and c.fix
    assert r.exit_code == 1
    # the other checks ran at the real input: unchanged
    assert r.check("calibration").status == "ok"


def test_resolution_dynamic_model_runs_both_sizes(blob, tmp_path):
    dyn = make_dynamic_blob_detector(tmp_path / "dyn.onnx")
    quiet = diagnose(dyn, blob["clean"], options=OPTS, progress=False)    # serve = native from imgsz metadata
    assert quiet.check("resolution").status == "ok"
    assert quiet.native_size == (128, 128)
    loud = diagnose(dyn, blob["clean"], serve_size=64, options=OPTS, progress=False)
    c = loud.check("resolution")
    assert c.status == "fail" and c.evidence["serving_emulated"] is False
    assert c.evidence["at_serving"]["recall"] < c.evidence["at_native"]["recall"]
    # served for real at 64 the objects are a quarter of a window: nothing left to compare shapes with
    assert loud.check("box_shape").status == "skipped"


def test_embed_at_serve_size_geometry():
    img = np.full((50, 100, 3), 200, np.uint8)
    canvas, row = embed_at_serve_size(img, (64, 64), (128, 128), Preprocess())
    assert canvas.shape == (128, 128, 3)
    # letterboxed into 64: scale 0.64, content 64x32 at (0, 16) of the 64 canvas, which sits at (32, 32)
    assert row[2] == pytest.approx(0.64) and row[4] == 32 and row[5] == 32 + 16
    assert (canvas[48:80, 32:96] == 200).all() and (canvas[:48] == 114).all()
    with pytest.raises(ValueError):
        embed_at_serve_size(img, (256, 256), (128, 128), Preprocess())


def test_resolution_with_a_native_model_export(blob, tmp_path):
    # a fixed-size export at 64 of the detector whose native export is 128: both run for real
    small = make_blob_detector(tmp_path / "blob64.onnx", size=64, gain=20.0)
    r = diagnose(small, blob["clean"], native_model=blob["model"], options=OPTS, progress=False)
    c = r.check("resolution")
    assert r.serve_size == (64, 64) and r.native_size == (128, 128)
    assert c.status in ("warn", "fail") and c.evidence["serving_emulated"] is False
    assert c.evidence["at_serving"]["recall"] < c.evidence["at_native"]["recall"]
    assert "blob.onnx" in c.finding
    same = diagnose(blob["model"], blob["clean"], native_model=blob["model"], options=OPTS, progress=False)
    assert same.check("resolution").status == "ok"


def test_native_model_of_another_layout_is_refused(blob, tmp_path):
    other = make_blob_detector(tmp_path / "obj.onnx", gain=20.0, layout="xywh_obj_cls")
    with pytest.raises(DetcalError, match="not the same detector"):
        diagnose(blob["model"], blob["clean"], native_model=other, options=OPTS, progress=False)


def test_resolution_larger_than_fixed_input_is_explained(blob):
    r = diagnose(blob["model"], blob["clean"], serve_size=256, options=OPTS, progress=False)
    c = r.check("resolution")
    assert c.status == "ok" and "cannot run at 256x256" in c.finding


# ------------------------------------------------------------------------------- 2 box shape

def test_box_shape_fires_on_large_objects(blob, tmp_path):
    scenes = [(f"pos_{i}", (128, 128), [(i % 2, 24, 24, 80)], None) for i in range(8)]
    data = write_scenes(tmp_path / "big", scenes)
    c = diagnose(blob["model"], data, options=OPTS, progress=False).check("box_shape")
    assert c.status == "fail", c.finding
    assert c.evidence["size_ratio_pred_over_gt"] < 0.5
    assert "anchors: not read" in c.finding   # anchor-free head: said plainly


def test_anchors_read_and_compared(blob, tmp_path):
    src = make_blob_detector(tmp_path / "obj.onnx", gain=20.0, layout="xywh_obj_cls")
    bad = with_anchor_grid(src, tmp_path / "bad_anchors.onnx", [[200, 220], [300, 310], [400, 380]])
    good = with_anchor_grid(src, tmp_path / "good_anchors.onnx", [[24, 24], [32, 32], [40, 40]])
    loud = diagnose(bad, blob["clean"], options=OPTS, progress=False).check("box_shape")
    assert loud.status == "fail" and loud.evidence["bpr_model"] < 0.5
    assert loud.evidence["bpr_kmeans"] == 1.0 and len(loud.evidence["anchors_kmeans"]) == 3
    assert "autoanchor" in loud.fix
    quiet = diagnose(good, blob["clean"], options=OPTS, progress=False).check("box_shape")
    assert quiet.status == "ok" and quiet.evidence["bpr_model"] == 1.0


def test_anchor_helpers():
    wh = np.array([[10, 10], [12, 11], [50, 20], [52, 22], [100, 100], [95, 105]], float)
    km = kmeans_anchors(wh, 3)
    assert km.shape == (3, 2) and np.all(np.diff(km.prod(axis=1)) > 0)
    bpr, iou = best_possible_recall(wh, km)
    assert bpr == 1.0 and iou > 0.8
    assert best_possible_recall(wh, np.array([[1000.0, 1000.0]]))[0] == 0.0
    m = onnx.load_from_string(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString())
    anchors, why = read_anchors(m)
    assert anchors is None and "anchor-free" in why


# ------------------------------------------------------------------------------- 3 letterbox

def test_letterbox_fires_on_detections_in_the_bars(blob, tmp_path):
    # red 128x94 scenes: 17 px bars; windows centred in the bars (y = 16, 112) still see 15 rows of red
    scenes = [(f"wide_{i}", (128, 94), [], (0, 1.0)) for i in range(4)]
    data = write_scenes(tmp_path / "wide", scenes)
    opts = DoctorOptions(timing_images=1, bootstrap=10)   # NMS IoU 0.7: the bar windows are not suppressed
    c = diagnose(blob["model"], data, options=opts, progress=False).check("letterbox")
    assert c.status == "fail", c.finding
    assert c.evidence["share_in_padding"] >= 0.05 and c.evidence["n_images_with_padding_detections"] == 4
    assert "patch" in c.fix


def test_letterbox_quiet_with_padding_but_no_detections_there(clean_report):
    c = clean_report.check("letterbox")
    assert c.status == "ok" and c.evidence["n_images_with_padding"] > 0 and c.evidence["n_in_padding"] == 0


# ------------------------------------------------------------------------------- 4 calibration

def test_calibration_fires_on_a_miscalibrated_gain(blob, tmp_path):
    low = make_blob_detector(tmp_path / "gain3.onnx", gain=3.0)   # the grey background scores 0.32: over-confident
    r = diagnose(low, blob["clean"], options=OPTS, out_dir=tmp_path / "out", progress=False)
    c = r.check("calibration")
    assert c.status in ("warn", "fail") and c.evidence["dece"] > 0.08
    assert "over-confident" in c.finding
    assert Path(c.files[0]).name == "reliability.png" and Path(c.files[0]).exists()


def test_calibration_quiet_when_scores_match_precision(clean_report):
    c = clean_report.check("calibration")
    assert c.status == "ok" and c.evidence["dece"] <= 0.08
    lo, hi = c.evidence["dece_90ci"]
    assert lo <= c.evidence["dece"] <= hi


def test_saturated_scores_with_errors_are_flagged(blob, tmp_path):
    hot = make_blob_detector(tmp_path / "gain80.onnx", gain=80.0)
    data = write_scenes(tmp_path / "hot", clean_scenes(n_pos=8, n_neg=8, neg_strength=0.9))
    c = diagnose(hot, data, options=OPTS, progress=False).check("calibration")   # tinted walls at ~1.0
    assert c.status in ("warn", "fail") and c.evidence["share_saturated"] > 0.5
    assert "saturated" in c.finding


# ------------------------------------------------------------------------------- 5 uniform FP

def test_uniform_fp_fires_on_strongly_tinted_surfaces(blob, tmp_path):
    data = write_scenes(tmp_path / "tinted", clean_scenes(n_pos=4, n_neg=8, neg_strength=0.9))
    out = tmp_path / "out"
    c = diagnose(blob["model"], data, options=OPTS, out_dir=out, progress=False).check("uniform_fp")
    assert c.status == "fail" and c.evidence["negative_image_rate_above_high"] == 1.0
    assert (out / "uniform_fp_crops.png").exists() and c.files
    tex = c.evidence["crop_texture"]
    assert tex == sorted(tex)


def test_uniform_fp_quiet_and_skipped(clean_report, blob, tmp_path):
    assert clean_report.check("uniform_fp").status == "ok"
    data = write_scenes(tmp_path / "nonneg", clean_scenes(n_pos=4, n_neg=0))
    c = diagnose(blob["model"], data, options=OPTS, progress=False).check("uniform_fp")
    assert c.status == "skipped" and "negative" in c.finding


# ------------------------------------------------------------------------------- 6 NMS load

def test_nms_load_fires_on_a_flood_of_candidates(tmp_path):
    flood = make_blob_detector(tmp_path / "flood.onnx", size=640, gain=1.0)   # every window > 0.25
    data = write_scenes(tmp_path / "few", clean_scenes(n_pos=2, n_neg=1))
    c = diagnose(flood, data, options=DoctorOptions(timing_images=1, bootstrap=10), progress=False).check("nms_load")
    assert c.status == "warn" and c.evidence["candidates_p99"] > 1000
    assert c.evidence["suggested_pre_nms_top_k"] == 3000 and "--pre-nms-top-k 3000" in c.fix


def test_nms_load_quiet(clean_report):
    c = clean_report.check("nms_load")
    assert c.status == "ok" and c.evidence["candidates_p99"] <= 20
    assert c.evidence["suggested_pre_nms_top_k"] == 100 and 0 <= c.evidence["postprocess_share"] <= 1


# ------------------------------------------------------------------------------- 7 labels

def test_labels_fire_on_edges_out_of_range_and_imbalance(blob, tmp_path):
    scenes = [(f"pos_{i}", (128, 128), [(0, 0, 48, 32)] if i % 2 else [(0, 48, 48, 32)], None) for i in range(20)]
    scenes.append(("rare", (128, 128), [(1, 48, 48, 32)], None))
    data = write_scenes(tmp_path / "edges", scenes)
    (tmp_path / "edges" / "labels" / "val" / "pos_0.txt").write_text("0 0.5 0.5 0.25 0.25\n0 0.95 0.5 0.3 0.2\n")
    c = diagnose(blob["model"], data, options=OPTS, progress=False).check("labels")
    assert c.status == "warn"
    ev = c.evidence
    assert ev["share_touching_edge"] > 0.4 and ev["n_out_of_range_clipped"] == 1
    assert ev["imbalance_max_over_min"] == 21
    assert "touch the image edge" in c.finding and "imbalance" in c.finding and "outside the image" in c.finding


def test_labels_quiet(clean_report):
    c = clean_report.check("labels")
    assert c.status == "ok" and c.evidence["n_touching_edge"] == 0 and c.evidence["imbalance_max_over_min"] <= 2


# ------------------------------------------------------------------------------- CLI

def test_cli_exit_codes_and_outputs(blob, tmp_path, capsys):
    out = tmp_path / "cli_out"
    base = ["doctor", "--model", str(blob["model"]), "--data", str(blob["clean"]), "--quiet", "--iou", "0.3",
            "--out", str(out)]
    assert cli_main(base) == 0
    text = capsys.readouterr().out
    assert "nothing flagged" in text and (out / "doctor.json").exists()
    assert cli_main(base + ["--serve-size", "64"]) == 1
    text = capsys.readouterr().out
    first = [line for line in text.splitlines() if line.startswith(("FAIL", "WARN", "ok", "skip"))]
    assert first[0].startswith(("FAIL", "WARN")) and "resolution" in text
    assert cli_main(["doctor", "--model", str(tmp_path / "missing.onnx"), "--data", str(blob["clean"]), "--quiet",
                     "--out", str(out)]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_bad_input_is_a_detcal_error(blob, tmp_path):
    wrong = make_blob_detector(tmp_path / "three.onnx", num_classes=3)
    with pytest.raises(DetcalError, match="class count mismatch"):
        diagnose(wrong, blob["clean"], progress=False)
    with pytest.raises(DetcalError, match="serve-size"):
        diagnose(blob["model"], blob["clean"], serve_size=(0, 5), progress=False)


# ------------------------------------------------------------------------------- the real example detector

EXAMPLE_MODELS = sorted((Path(__file__).resolve().parents[1] / "examples" / "models").glob("*.onnx"))


@pytest.mark.skipif(not EXAMPLE_MODELS, reason="no trained example detector in examples/models/")
def test_doctor_runs_on_the_example_detector(tmp_path):
    from examples.detector.scenes import write_dataset

    data = write_dataset(tmp_path / "deploy", n_val_pos=12, n_val_neg=8, n_test_pos=0, n_test_neg=0, seed=3)
    r = diagnose(EXAMPLE_MODELS[0], data, options=DoctorOptions(timing_images=4, bootstrap=50),
                 out_dir=tmp_path / "out", progress=False)
    assert [c.name for c in r.checks] == ["resolution", "box_shape", "letterbox", "calibration", "uniform_fp",
                                          "nms_load", "labels"]
    assert all(c.status in ("ok", "warn", "fail", "skipped") and c.finding for c in r.checks)
    # the report describes this model and this data set
    from calib.data import load_dataset
    from calib.model_info import read_model_info
    ds = load_dataset(data, "val")
    n_neg = sum(s.is_negative for s in ds.samples)
    n_boxes = sum(s.n_boxes for s in ds.samples)
    assert (len(ds), n_neg) == (20, 8)
    assert r.serve_size == r.native_size == tuple(read_model_info(EXAMPLE_MODELS[0]).input_size)
    labels = r.check("labels").evidence
    assert labels["n_images"] == len(ds) and labels["n_boxes"] == n_boxes
    assert sum(labels["boxes_per_class"].values()) == n_boxes and list(labels["boxes_per_class"]) == ds.names
    assert r.check("uniform_fp").evidence["n_negative_images"] == n_neg
    cal, lb = r.check("calibration").evidence, r.check("letterbox").evidence
    assert cal["n_detections"] == lb["n_detections"] > 0            # both count the detections > conf
    assert cal["dece_90ci"][0] <= cal["dece"] <= cal["dece_90ci"][1]
    assert r.exit_code == (1 if any(c.flagged for c in r.checks) else 0)
    assert json.loads((tmp_path / "out" / "doctor.json").read_text()) == json.loads(json.dumps(r.to_dict()))
