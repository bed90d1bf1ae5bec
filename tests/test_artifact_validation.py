"""calibration.json is validated whole on load: every mutation of a valid artifact either loads
into an artifact that patches and runs, or fails with one DetcalError line naming the file and
the key (a JSON path such as `calibrator.a[1]`). Never anything else."""
from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifact_factory import make_artifact, near_identity_isotonic, synthetic_detector
from calib.artifact import LETTERBOX_INPUT, load_artifact
from calib.artifact.constraints import ConstraintError, check_block
from calib.errors import DetcalError
from calib.model_info import sha256_file
from onnx_ops.patch import patch_model

NUM_CLASSES = 3
SIZE = 32


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "det.onnx"
    onnx.save(synthetic_detector("xywh_cls", num_classes=NUM_CLASSES, size=SIZE), str(path))
    return path


def valid_dict(model_path, calibrator: str) -> dict:
    cal = near_identity_isotonic(NUM_CLASSES, knots=5) if calibrator == "isotonic" else calibrator
    art = make_artifact(NUM_CLASSES, calibrator=cal, thresholds=0.2, sha256=sha256_file(model_path),
                        input_size=(SIZE, SIZE), max_det=20)
    art.thresholds.update(confidence=0.95, certified_bound=0.2, certified=True, n_negative_images=30, note="")
    art.metrics = {"before": {"dece": 0.1}, "after": {"per_class": {"0": {"threshold": 0.2}}}}
    return json.loads(json.dumps(art.to_dict()))


def paths(node, prefix=""):
    """Every (JSON path, parent, key) in a document, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        p = f"{prefix}[{k}]" if isinstance(node, list) else (f"{prefix}.{k}" if prefix else k)
        yield p, node, k
        yield from paths(v, p)


BAD_VALUES = [math.nan, math.inf, -math.inf, -0.5, 1.5, 0, -1, 1e9, 10 ** 400, "text", None, True, [], {}, [0.1]]


def run_patched(model_path, art, tmp_path):
    """Patch the small model with the loaded artifact and run it on one random image."""
    out = tmp_path / "det.detcal.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            patch_model(model_path, art, out, force=True)
        except DetcalError as exc:          # a mismatch with the model (layout, size) is the patch's to refuse
            assert "\n" not in str(exc)
            return
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    row = np.array([[SIZE, SIZE, 1, 1, 0, 0]], np.float32)
    num, boxes, scores, classes = sess.run(None, {sess.get_inputs()[0].name: x, LETTERBOX_INPUT: row})
    k = int(num[0, 0])
    assert 0 <= k <= boxes.shape[1]
    assert np.all(np.isfinite(boxes)) and np.all((scores >= 0) & (scores <= 1))
    assert np.all((classes[0, :k] >= 0) & (classes[0, :k] < NUM_CLASSES))


def check_load(path, mutated_key):
    """Load; on failure the one-line DetcalError names the file and the key or one of its ancestors."""
    try:
        return load_artifact(path)
    except DetcalError as exc:
        msg = str(exc)
        assert "\n" not in msg and str(path) in msg, msg
        if mutated_key is not None:
            ancestors = [mutated_key]
            while "." in ancestors[-1] or "[" in ancestors[-1]:
                cut = max(ancestors[-1].rfind("."), ancestors[-1].rfind("["))
                ancestors.append(ancestors[-1][:cut])
            assert any(a in msg for a in ancestors) or "model.num_classes" in msg, (mutated_key, msg)
        return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calibrator=st.sampled_from(["platt_per_class", "isotonic", "identity"]), data=st.data())
def test_mutated_artifacts_load_and_patch_or_name_the_key(model_path, tmp_path, calibrator, data):
    d = valid_dict(model_path, calibrator)
    keys = list(paths(d))
    i = data.draw(st.integers(0, len(keys) - 1), label="key index")
    action = data.draw(st.sampled_from(["drop", "replace"]), label="action")
    mutated = copy.deepcopy(d)
    key, node, k = list(paths(mutated))[i]          # the same key, in the copy
    if action == "drop":
        del node[k]
    else:
        node[k] = data.draw(st.sampled_from(BAD_VALUES), label="value")
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(mutated, allow_nan=True))
    art = check_load(path, key)
    if art is not None:
        run_patched(model_path, art, tmp_path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncated_artifact_is_one_clear_error(model_path, tmp_path, cut):
    text = json.dumps(valid_dict(model_path, "platt_per_class"), indent=2)
    path = tmp_path / "calibration.json"
    path.write_text(text[: int(cut * len(text))])
    with pytest.raises(DetcalError) as exc:
        load_artifact(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("mutate,key,value", [
    (lambda d: d["thresholds"]["score"].__setitem__(1, math.nan), "thresholds.score[1]", "nan"),
    (lambda d: d["thresholds"]["score"].__setitem__(0, -0.5), "thresholds.score[0]", "-0.5"),
    (lambda d: d["thresholds"]["score"].__setitem__(2, 1.5), "thresholds.score[2]", "1.5"),
    (lambda d: d["calibrator"]["a"].__setitem__(1, -2.0), "calibrator.a[1]", "-2.0"),
    (lambda d: d["calibrator"]["a"].__setitem__(0, 0.0), "calibrator.a[0]", "0.0"),
    (lambda d: d["calibrator"]["b"].__setitem__(2, math.inf), "calibrator.b[2]", "inf"),
    (lambda d: d["nms"].update(max_det=10 ** 9), "nms.max_det", "1000000000"),
    (lambda d: d["nms"].update(mask_padding="yes"), "nms.mask_padding", "'yes'"),
    (lambda d: d["preprocess"].update(pad_value=300), "preprocess.pad_value", "300"),
    (lambda d: d["preprocess"].update(scaling={"kind": "mean_std", "mean": [0, 0, 0], "std": [1, 0, 1]}),
     "preprocess.scaling.std[1]", "0"),
    (lambda d: d["model"].update(input_size=[32, 0]), "model.input_size[1]", "0"),
    (lambda d: d["model"].update(class_names=["a", "b"]), "model.class_names", "['a', 'b']"),
    (lambda d: d["model"].update(layout="yolo"), "model.layout", "'yolo'"),
    (lambda d: d.update(version=7), "version", "7"),
    (lambda d: d.update(format="other"), "format", "'other'"),
])
def test_each_rule_names_file_key_and_value(model_path, tmp_path, mutate, key, value):
    d = valid_dict(model_path, "platt_per_class")
    mutate(d)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(d, allow_nan=True))
    with pytest.raises(DetcalError) as exc:
        load_artifact(path)
    msg = str(exc.value)
    assert str(path) in msg and key in msg and value in msg and "\n" not in msg, msg


@pytest.mark.parametrize("x,y,key", [
    ([0.0, 0.5, 0.5], [0.0, 0.2, 0.3], "calibrator.x[0][2]"),      # knots not strictly increasing
    ([0.0, 0.5, 0.9], [0.0, 0.4, 0.3], "calibrator.y[0][2]"),      # values decreasing
    ([0.0, 0.5, 0.9], [0.0, 0.4], "calibrator.y[0]"),              # fewer values than knots
    ([0.0, 0.5, 1.7], [0.0, 0.4, 0.5], "calibrator.x[0][2]"),      # knot outside [0, 1]
])
def test_isotonic_knot_rules(model_path, tmp_path, x, y, key):
    d = valid_dict(model_path, "isotonic")
    d["calibrator"]["x"][0], d["calibrator"]["y"][0] = x, y
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DetcalError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_artifact(path)


def test_valid_artifacts_load_and_patch(model_path, tmp_path):
    for calibrator in ("platt_per_class", "isotonic", "identity"):
        path = tmp_path / f"{calibrator}.json"
        path.write_text(json.dumps(valid_dict(model_path, calibrator)))
        run_patched(model_path, load_artifact(path), tmp_path)


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(DetcalError, match="is a directory"):
        load_artifact(tmp_path)
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(DetcalError, match="empty file"):
        load_artifact(tmp_path / "empty.json")


def test_constraint_errors_name_the_json_path():
    from calib.artifact.configs import PostprocessConfig

    with pytest.raises(ConstraintError) as exc:
        check_block({"iou_threshold": 0.5, "max_det": 2.5}, PostprocessConfig._artifact_constraints, "nms")
    assert exc.value.key == "nms.max_det" and exc.value.value == 2.5
