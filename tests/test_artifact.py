"""The calibration artifact: round trip, atomic writes, and errors that name the file and the key."""
import json
import os

import numpy as np
import pytest

from calib import atomic
from calib.artifact import FORMAT, FORMAT_VERSION, Artifact, load_artifact
from calib.artifact import AffineLogitMap, IsotonicMap
from calib.errors import DetcalError
from calib.artifact import PostprocessConfig
from calib.artifact import Preprocess


def make(calibration=None, num_classes=2):
    calibration = calibration or AffineLogitMap("platt_per_class", [0.8, 1.2][:num_classes] + [1.0] * (num_classes - 2),
                                                [0.1, -0.3][:num_classes] + [0.0] * (num_classes - 2))
    return Artifact(
        model={"sha256": "ab" * 32, "file": "m.onnx", "input_name": "images", "input_size": [128, 160],
               "layout": "xywh_cls", "num_classes": num_classes, "class_names": [f"c{i}" for i in range(num_classes)]},
        preprocess=Preprocess("stretch", 0, "BGR", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        calibration=calibration,
        thresholds={"score": [0.3] * num_classes, "max_negative_rate": 0.01, "certified": False,
                    "certified_bound": np.float64(0.17), "n_negative_images": np.int64(16)},
        nms=PostprocessConfig(iou_threshold=0.6, max_det=100, pre_nms_top_k=1000, multi_label=True),
        metrics={"before": {"dece": np.float32(0.4), "ap50": float("nan")}, "after": {"dece": 0.05}},
        selection={"mode": "explicit", "winner": "platt_per_class"},
    )


@pytest.mark.parametrize("calibration", [
    None,
    IsotonicMap([[0.0, 0.5, 1.0], [0.1, 0.9]], [[0.0, 0.2, 0.9], [0.05, 0.95]]),
])
def test_save_load_round_trip(tmp_path, calibration):
    art = make(calibration)
    path = art.save(tmp_path / "calibration.json")
    d = json.loads(path.read_text())
    assert d["format"] == FORMAT and d["version"] == FORMAT_VERSION
    assert d["metrics"]["before"]["ap50"] is None                    # NaN -> null: strict JSON
    back = load_artifact(path)
    assert back.model == art.model
    assert back.preprocess == art.preprocess
    assert back.nms == art.nms
    assert back.calibration.to_artifact() == art.calibration.to_artifact()
    np.testing.assert_array_equal(back.score_thresholds, [0.3, 0.3])
    assert back.selection == art.selection
    assert back.num_classes == 2
    # and a second save of what was loaded is the same file, byte for byte (created is kept)
    again = back.save(tmp_path / "again.json")
    assert json.loads(again.read_text()) == d


def test_save_is_atomic_when_serialisation_fails(tmp_path):
    out = tmp_path / "calibration.json"
    out.write_text("previous\n")
    art = make()
    art.metrics["oops"] = object()                                  # not JSON-serialisable
    with pytest.raises(TypeError):
        art.save(out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json"]


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    out = tmp_path / "calibration.json"
    art = make()

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(DetcalError, match="calibration.json"):
        art.save(out)
    assert list(tmp_path.iterdir()) == []                            # no partial file, no temp file
    monkeypatch.undo()
    out.write_text("previous\n")
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(DetcalError):
        art.save(out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json"]


def write(tmp_path, d, name="cal.json"):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def good_dict():
    return json.loads(json.dumps(make().to_dict(), default=float, allow_nan=True).replace("NaN", "null"))


@pytest.mark.parametrize("mutate,words", [
    (lambda d: d.update(format="something.else"), ["format"]),
    (lambda d: d.pop("format"), ["format"]),
    (lambda d: d.update(version=FORMAT_VERSION + 1), ["version", str(FORMAT_VERSION + 1)]),
    (lambda d: d.update(version="1"), ["version"]),
    (lambda d: d.pop("calibrator"), ["calibrator"]),
    (lambda d: d.update(nms=[]), ["nms"]),
    (lambda d: d["model"].pop("sha256"), ["sha256"]),
    (lambda d: d["model"].pop("layout"), ["layout"]),
    (lambda d: d["thresholds"].update(score=[0.3, 0.3, 0.3]), ["thresholds.score", "2"]),
    (lambda d: d["thresholds"].update(score=[0.3, None]), ["thresholds.score"]),
    (lambda d: d["thresholds"].pop("score"), ["thresholds.score"]),
    (lambda d: d["calibrator"].update(a=[1.0, 1.0, 1.0], b=[0.0, 0.0, 0.0]), ["calibrator", "3 classes"]),
    (lambda d: d["calibrator"].update(kind="magic"), ["calibrator", "magic"]),
    (lambda d: d["calibrator"].pop("b"), ["calibrator", "'b'"]),
    (lambda d: d["preprocess"].update(resize="crop"), ["preprocess", "crop"]),
    (lambda d: d["preprocess"].update(scaling="div255"), ["preprocess"]),
    (lambda d: d["nms"].update(iou_threshold=1.5), ["nms", "iou_threshold"]),
    (lambda d: d["nms"].update(max_det="many"), ["nms"]),
    (lambda d: d["model"].update(num_classes="two"), ["num_classes"]),
    (lambda d: d["model"].update(input_size=[640]), ["input_size"]),
])
def test_from_dict_errors_name_file_and_key(tmp_path, mutate, words):
    d = good_dict()
    assert load_artifact(write(tmp_path, d)).num_classes == 2
    mutate(d)
    path = write(tmp_path, d, "bad.json")
    with pytest.raises(DetcalError) as exc:
        load_artifact(path)
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_load_errors(tmp_path):
    with pytest.raises(DetcalError, match="not found"):
        load_artifact(tmp_path / "missing.json")
    p = tmp_path / "broken.json"
    p.write_text('{"format": "detcal.calibration", ')
    with pytest.raises(DetcalError, match="broken.json.*not valid JSON"):
        load_artifact(p)
    p.write_bytes(os.urandom(64) + b"\xff\xfe")
    with pytest.raises(DetcalError, match="broken.json"):
        load_artifact(p)
    p.write_text("[1, 2]")
    with pytest.raises(DetcalError, match="not a detcal calibration file"):
        load_artifact(p)
