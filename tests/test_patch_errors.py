"""Bad input to `patch_model`: each a one-line DetcalError, and nothing written."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from artifact_factory import make_artifact, synthetic_detector
from calib.errors import DetcalError
from calib.model_info import sha256_file
from onnx_ops.patch import patch_model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(synthetic_detector("xywh_cls", num_classes=3, opset=13, size=32), str(path))
    return path


def artifact_for(path, **kw):
    return make_artifact(3, calibrator="platt_per_class", thresholds=0.2, sha256=sha256_file(path), input_size=(32, 32),
                         max_det=20, **kw)


def one_line_error(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def only(tmp_path, *names):
    return sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_sha256_mismatch_needs_force(tmp_path, model_path):
    art = make_artifact(3, sha256="0" * 64, input_size=(32, 32))
    with pytest.raises(DetcalError) as e:
        patch_model(model_path, art)
    one_line_error(e, "sha256", "--force")
    assert only(tmp_path, "det.onnx")
    out = patch_model(model_path, art, force=True)
    assert out.exists()


def test_already_patched(tmp_path, model_path):
    out = patch_model(model_path, artifact_for(model_path))
    art2 = make_artifact(3, sha256=sha256_file(out), input_size=(32, 32))
    with pytest.raises(DetcalError) as e:
        patch_model(out, art2, tmp_path / "again.onnx")
    one_line_error(e, "already patched")
    assert not (tmp_path / "again.onnx").exists()


def test_out_path_equal_to_input(tmp_path, model_path):
    before = sha256_file(model_path)
    with pytest.raises(DetcalError) as e:
        patch_model(model_path, artifact_for(model_path), model_path)
    one_line_error(e, "same as the input")
    assert sha256_file(model_path) == before and only(tmp_path, "det.onnx")


def test_unrecognised_head(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["out"], axes=[2, 3], keepdims=0)], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "cls.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(DetcalError) as e:
        patch_model(path, artifact_for(path))
    one_line_error(e, "no output fits a supported layout")
    assert only(tmp_path, "cls.onnx")


def test_layout_mismatch(tmp_path, model_path):
    with pytest.raises(DetcalError) as e:
        patch_model(model_path, artifact_for(model_path, layout="xywh_obj_cls"))
    one_line_error(e, "xywh_cls", "xywh_obj_cls")


def test_class_count_mismatch(tmp_path, model_path):
    art = make_artifact(5, sha256=sha256_file(model_path), input_size=(32, 32))
    with pytest.raises(DetcalError):
        patch_model(model_path, art)
    assert only(tmp_path, "det.onnx")


def test_missing_model(tmp_path):
    with pytest.raises(DetcalError) as e:
        patch_model(tmp_path / "nope.onnx", make_artifact(3))
    one_line_error(e, "not found")


def test_opset_too_old_and_not_convertible(tmp_path, monkeypatch):
    model = synthetic_detector("xywh_cls", num_classes=3, opset=10, size=32)
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    from onnx import version_converter

    def fail(*a, **k):
        raise RuntimeError("no adapter")
    monkeypatch.setattr(version_converter, "convert_version", fail)
    with pytest.raises(DetcalError) as e:
        patch_model(path, artifact_for(path))
    one_line_error(e, "opset 10", "NonMaxSuppression")
    assert only(tmp_path, "old.onnx")


def test_bad_override(model_path):
    with pytest.raises(DetcalError):
        patch_model(model_path, artifact_for(model_path), iou=1.5)
    with pytest.raises(DetcalError):
        patch_model(model_path, artifact_for(model_path), conf=-0.1)


def test_default_out_path_and_overwrite_of_previous_output(tmp_path, model_path):
    art = artifact_for(model_path)
    out = patch_model(model_path, art)
    assert out == tmp_path / "det.detcal.onnx"
    first = sha256_file(out)
    out2 = patch_model(model_path, art, conf=0.5)            # a previous output may be replaced
    assert out2 == out and sha256_file(out) != first
    assert np.all([p.suffix == ".onnx" for p in tmp_path.iterdir()])


def test_out_path_equal_to_the_calibration(tmp_path, model_path):
    """--out naming the calibration.json it reads is refused before any work; the file stays."""
    cal = tmp_path / "calibration.json"
    artifact_for(model_path).save(cal)
    before = sha256_file(cal)
    with pytest.raises(DetcalError) as e:
        patch_model(model_path, cal, cal)
    one_line_error(e, "same as the input", "calibration.json")
    assert sha256_file(cal) == before
