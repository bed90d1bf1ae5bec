"""`patch` compares the artifact's recorded image input convention (input_dtype, input_layout) with
the model it patches: a mismatch is one line naming both, even under --force (fed otherwise, the
graph would compute on wrong values)."""
from __future__ import annotations

import onnx
import pytest

from artifact_factory import make_artifact, synthetic_detector
from calib.artifact import Artifact
from calib.errors import DetcalError
from calib.model_info import sha256_file
from onnx_ops.patch import build_patched_model, patch_model
from test_model_input import with_input


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """(dtype, layout, dims) -> path: the synthetic detector behind each input convention."""
    d = tmp_path_factory.mktemp("input_check")
    base = synthetic_detector("xywh_cls", num_classes=3, opset=13, size=32)
    out = {}
    for dtype, layout, dims in (("float32", "NCHW", None), ("uint8", "NCHW", None), ("float32", "NHWC", None),
                                ("uint8", "NHWC", None), ("float32", "NHWC", ("batch", "h", "w", "c"))):
        path = d / f"det_{dtype}_{layout}{'_dyn' if dims else ''}.onnx"
        m = base if (dtype, layout, dims) == ("float32", "NCHW", None) else with_input(base, dtype, layout, dims=dims)
        onnx.save(m, str(path))
        out[dtype, layout, dims] = path
    return out


def recorded(path, dtype: str | None, layout: str | None) -> Artifact:
    """An artifact fitted on `path` that records the input convention (None: an older file without the key)."""
    art = make_artifact(3, thresholds=0.2, sha256=sha256_file(path), input_size=(32, 32), max_det=20)
    extra = {k: v for k, v in (("input_dtype", dtype), ("input_layout", layout)) if v is not None}
    return Artifact.from_dict({**art.to_dict(), "model": {**art.model, **extra}})


@pytest.mark.parametrize("model_key,art_conv", [
    (("uint8", "NCHW", None), ("float32", "NCHW")),
    (("float32", "NCHW", None), ("uint8", "NCHW")),
    (("float32", "NHWC", None), ("float32", "NCHW")),
    (("float32", "NCHW", None), ("float32", "NHWC")),
    (("uint8", "NHWC", None), ("float32", "NCHW")),
    (("float32", "NHWC", None), (None, None)),            # an older artifact: NCHW
])
def test_a_mismatch_is_one_line_naming_both_even_with_force(tmp_path, models, model_key, art_conv):
    path = models[model_key]
    art = recorded(path, *art_conv)
    want = f"{art_conv[0] or model_key[0]} {art_conv[1] or 'NCHW'}"
    for force in (False, True):
        out = tmp_path / f"p{force}.onnx"
        with pytest.raises(DetcalError) as e:
            patch_model(path, art, out, force=force)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(str(path)), msg
        assert f"takes {model_key[0]} {model_key[1]}" in msg and f"taking {want}" in msg, msg
        assert not out.exists()


@pytest.mark.parametrize("model_key", [("float32", "NCHW", None), ("uint8", "NCHW", None),
                                       ("float32", "NHWC", None), ("uint8", "NHWC", None)])
def test_the_matching_convention_patches_and_keeps_the_input(tmp_path, models, model_key):
    path = models[model_key]
    res = build_patched_model(path, recorded(path, model_key[0], model_key[1]))
    src = onnx.load(str(path)).graph.input[0]
    assert res.model.graph.input[0] == src


def test_dims_that_leave_the_layout_open_follow_the_recorded_one(tmp_path, models):
    """[batch, h, w, c]: NCHW by default, NHWC where the calibration says so; both patch."""
    from calib.evaluate.patched import read_patched_info

    path = models["float32", "NHWC", ("batch", "h", "w", "c")]
    for layout in ("NHWC", "NCHW"):
        out = patch_model(path, recorded(path, "float32", layout), tmp_path / f"{layout}.onnx")
        assert read_patched_info(out).image_input == "images"
    with pytest.raises(DetcalError, match="takes float32 NCHW, the calibration .* taking uint8 NCHW"):
        patch_model(path, recorded(path, "uint8", "NCHW"), tmp_path / "u.onnx")


def test_cli_mismatch_under_force_is_exit_2_and_one_line(tmp_path, models, capsys):
    from calib.cli import main

    path = models["uint8", "NHWC", None]
    cal = tmp_path / "c.json"
    recorded(path, "float32", "NCHW").save(cal)
    assert main(["patch", "--model", str(path), "--calibration", str(cal), "--force",
                 "--out", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("detcal: error: ") and "\n" not in err and "uint8 NHWC" in err and "float32 NCHW" in err
    assert not (tmp_path / "o.onnx").exists()
