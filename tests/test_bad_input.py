"""Bad or unusual input found by trying ~200 of them (issue 10): each a one-line DetcalError,
no traceback, nothing left behind; and outputs readable like any other file."""
from __future__ import annotations

import os
import stat

import pytest

from calib import atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_umask_permissions_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = atomic.atomic_write_text(tmp_path / "calibration.json", "{}\n")
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json", "plain.txt"]   # no temp file left


# ----------------------------------------------------------------------------- eval: files that belong together
def test_eval_refuses_calibration_and_patched_of_another_model(tmp_path, blob_model, blob_data, capsys):
    from artifact_factory import make_artifact
    from calib.cli import main
    from calib.model_info import sha256_file
    from onnx_ops.patch import patch_model
    from synthetic import make_blob_detector

    other = make_blob_detector(tmp_path / "other.onnx", gain=7.0)
    assert sha256_file(other) != sha256_file(blob_model)
    art = make_artifact(2, calibrator="identity", thresholds=0.25, input_size=(128, 128), sha256=sha256_file(other))
    cal = art.save(tmp_path / "other_calibration.json")
    patched = patch_model(other, art, tmp_path / "other.detcal.onnx")
    base = ["eval", "--model", str(blob_model), "--data", str(blob_data), "--split", "val", "--quiet",
            "--out", str(tmp_path / "ev")]
    for extra, named in ((["--calibration", str(cal)], [str(cal)]),
                         (["--patched", str(patched)], [str(patched)]),
                         (["--patched", str(patched), "--calibration", str(cal)], [str(cal), str(patched)])):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "sha256" in err and str(blob_model) in err, err
        assert all(n in err for n in named), err
    assert not (tmp_path / "ev").exists()
    # the right files still evaluate
    own = make_artifact(2, calibrator="identity", thresholds=0.25, input_size=(128, 128), sha256=sha256_file(blob_model))
    assert main(base + ["--calibration", str(own.save(tmp_path / "own.json"))]) == 0


# ----------------------------------------------------------------------------- model inputs detcal cannot feed
def _rewire_input(model, first_node, new_input_type=None, new_dims=None):
    """Put `first_node` (reading the image input, writing 'detcal_test/x') in front of the graph."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    name = m.graph.input[0].name
    for n in m.graph.node:
        for i, x in enumerate(n.input):
            if x == name:
                n.input[i] = "detcal_test/x"
    m.graph.node.insert(0, first_node)
    t = m.graph.input[0].type.tensor_type
    if new_input_type is not None:
        t.elem_type = new_input_type
    if new_dims is not None:
        del t.shape.dim[:]
        for v in new_dims:
            d = t.shape.dim.add()
            if isinstance(v, str):
                d.dim_param = v
            else:
                d.dim_value = v
    return m


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory, blob_model):
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("odd")
    base = onnx.load(str(blob_model))
    u8 = _rewire_input(base, helper.make_node("Cast", [base.graph.input[0].name], ["detcal_test/x"], to=TensorProto.FLOAT),
                       new_input_type=TensorProto.UINT8)
    onnx.save(u8, str(d / "uint8.onnx"))
    (d / "empty.onnx").write_bytes(b"")
    return d


def _cli(argv, capsys):
    from calib.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("command", ["fit", "doctor"])
@pytest.mark.parametrize("model,layout,words", [
    ("uint8.onnx", None, ["uint8 (raw 0..255 pixels)", "/255 scaling", "--scale none"]),   # runs with --scale none
    ("blob", "end2end", ["--layout end2end", "[B, K, 6]", "output0 [1, 6, 49]"]),
])
def test_unsupported_models_are_one_line_and_leave_no_folder(tmp_path, odd_models, blob_model, blob_data, capsys,
                                                             command, model, layout, words):
    path = blob_model if model == "blob" else odd_models / model
    out = tmp_path / "new" / ("cal.json" if command == "fit" else "doctor")
    argv = [command, "--model", path, "--data", blob_data, "--quiet", "--out", out]
    rc, err = _cli(argv + (["--layout", layout] if layout else []), capsys)
    assert rc == 2 and err.startswith("detcal: error: ") and "\n" not in err, err
    assert str(path) in err and all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []                 # the --out folder it created is gone again


def test_zero_byte_model_says_empty_file_in_every_command(tmp_path, odd_models, blob_data, capsys):
    from artifact_factory import make_artifact

    empty = odd_models / "empty.onnx"
    cal = make_artifact(2, input_size=(128, 128)).save(tmp_path / "c.json")
    runs = [["fit", "--model", empty, "--data", blob_data, "--out", tmp_path / "o" / "c.json"],
            ["doctor", "--model", empty, "--data", blob_data, "--out", tmp_path / "d"],
            ["eval", "--model", empty, "--data", blob_data, "--split", "val", "--out", tmp_path / "e"],
            ["patch", "--model", empty, "--calibration", cal, "--force"],
            ["inspect", empty]]
    messages = set()
    for argv in runs:
        rc, err = _cli(argv, capsys)
        assert rc == 2 and "\n" not in err, (argv[0], err)
        messages.add(err)
    assert len(messages) == 1, messages                   # the same true line everywhere
    assert "empty file" in messages.pop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_inspect_on_a_directory(tmp_path, capsys):
    rc, err = _cli(["inspect", tmp_path], capsys)
    assert rc == 2 and "is a directory" in err and str(tmp_path) in err and "no such file" not in err


@pytest.mark.parametrize("command", ["fit", "eval", "doctor"])
def test_batch_zero_is_refused(command, tmp_path, capsys):
    from calib.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--model", "m.onnx", "--data", "d.yaml", "--batch", "0"])
    assert exc.value.code == 2 and "--batch" in capsys.readouterr().err


def test_ctrl_c_during_the_library_imports(monkeypatch, capsys):
    """A KeyboardInterrupt while `run` imports numpy/onnxruntime/the fit prints one line, exit 130."""
    import sys

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "calib.fitting":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "calib.fitting", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting()] + sys.meta_path)
    from calib.cli import main

    assert main(["fit", "--model", "m.onnx", "--data", "d.yaml"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "detcal: interrupted" and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["patch", "--model", "m.onnx", "--calibration", "c.json", "--conf", "nan"],
    ["patch", "--model", "m.onnx", "--calibration", "c.json", "--iou", "1.5"],
    ["patch", "--model", "m.onnx", "--calibration", "c.json", "--max-det", "0"],
    ["eval", "--model", "m.onnx", "--data", "d.yaml", "--conf", "-0.5"],
    ["eval", "--model", "m.onnx", "--data", "d.yaml", "--match-iou", "nan"],
    ["doctor", "--model", "m.onnx", "--data", "d.yaml", "--iou", "inf"],
    ["fit", "--model", "m.onnx", "--data", "d.yaml", "--mean", "nan,0,0"],
    ["fit", "--model", "m.onnx", "--data", "d.yaml", "--threads", "0"],
])
def test_out_of_range_options_are_usage_errors(argv, capsys):
    from calib.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and argv[-2] in err and "Traceback" not in err


@pytest.mark.parametrize("value", [float("nan"), -0.5, 1.5])
def test_patch_and_eval_refuse_a_bad_threshold(tmp_path, blob_model, blob_data, capsys, value):
    import json

    from artifact_factory import make_artifact
    from calib.model_info import sha256_file

    art = make_artifact(2, calibrator="identity", thresholds=0.25, input_size=(128, 128), sha256=sha256_file(blob_model))
    d = json.loads(json.dumps(art.to_dict()))
    d["thresholds"]["score"][1] = value
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps(d, allow_nan=True))
    out = tmp_path / "m.detcal.onnx"
    for argv in (["patch", "--model", blob_model, "--calibration", cal, "--out", out],
                 ["eval", "--model", blob_model, "--calibration", cal, "--data", blob_data, "--split", "val",
                  "--out", tmp_path / "ev"]):
        rc, err = _cli(argv, capsys)
        assert rc == 2 and "\n" not in err and str(cal) in err and "thresholds.score[1]" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json"]
