"""The command-line layer (calib/cli/): every command registered, argument types shared, user
errors one line with exit 2, `detcal patch` refusing exactly what `patch_model` refuses, and a
broken import failing loudly instead of hiding a command."""
from __future__ import annotations

import importlib
import sys

import onnx
import pytest

from artifact_factory import make_artifact, synthetic_detector
from calib import cli
from calib.cli import main
from calib.errors import DetcalError
from calib.model_info import sha256_file
from onnx_ops import ep_support
from onnx_ops.patch import patch_model

COMMANDS = ("fit", "patch", "eval", "inspect", "doctor")
BATCHED = {  # the required arguments of each command taking --batch
    "fit": ["--model", "m.onnx", "--data", "d.yaml"],
    "eval": ["--model", "m.onnx", "--data", "d.yaml"],
    "doctor": ["--model", "m.onnx", "--data", "d.yaml"],
}


def subcommands(parser) -> dict:
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_command_is_registered_with_add_parser_and_run():
    parsers = subcommands(cli.build_parser())
    assert set(parsers) == set(COMMANDS)
    for name, module in zip(COMMANDS, cli.COMMANDS):
        assert module.__name__ == f"calib.cli.{name}"
        assert parsers[name].get_default("run") is module.run


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: detcal {command}")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command}" in out


def test_version_prints_the_version_and_the_artifact_format(capsys):
    import calib
    from calib.artifact.schema import FORMAT, FORMAT_VERSION

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out == f"detcal {calib.__version__} (writes {FORMAT} version {FORMAT_VERSION})\n"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: detcal" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(BATCHED))
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_batch_must_be_a_positive_integer(command, value, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, *BATCHED[command], "--batch", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--batch" in err and ("must be >= 1" in err or "positive integer" in err)


def test_parse_size_and_floats3():
    from argparse import ArgumentTypeError

    from calib.cli.args import floats3, parse_size, positive_int
    assert parse_size("640") == (640, 640) and parse_size("480x640") == (480, 640) and parse_size("480,640") == (480, 640)
    assert floats3("0.1,0.2,0.3") == (0.1, 0.2, 0.3) and positive_int("4") == 4
    for bad in ("0", "1x2x3", "ax4", "-5"):
        with pytest.raises(ArgumentTypeError):
            parse_size(bad)
    with pytest.raises(ArgumentTypeError):
        floats3("1,2")


def test_eval_help_defaults_agree_with_the_evaluator():
    from calib import evaluate
    from calib.cli import eval as eval_command
    assert (eval_command.DEFAULT_CONF, eval_command.AP_FLOOR) == (evaluate.DEFAULT_CONF, evaluate.AP_FLOOR)


def test_ctrl_c_is_exit_130_without_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.fit, "run", interrupted)
    assert main(["fit", "--model", "m.onnx", "--data", "d.yaml"]) == 130
    assert capsys.readouterr().err.strip() == "detcal: interrupted"


# ----------------------------------------------------------------- patch: CLI == library

@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "det.onnx"
    onnx.save(synthetic_detector("xywh_cls", num_classes=3, opset=13, size=32), str(path))
    return path


def write_artifact(tmp_path, sha256):
    art = make_artifact(3, calibrator="platt_per_class", thresholds=0.2, sha256=sha256, input_size=(32, 32), max_det=20)
    path = tmp_path / "calibration.json"
    art.save(path)
    return path


def refusal_by_both(tmp_path, model_path, calibration, capsys) -> str:
    """The DetcalError message of patch_model, checked to be what `detcal patch` prints (exit 2)."""
    with pytest.raises(DetcalError) as e:
        patch_model(model_path, calibration, tmp_path / "lib.onnx")
    rc = main(["patch", "--model", str(model_path), "--calibration", str(calibration), "--out", str(tmp_path / "cli.onnx")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"detcal: error: {e.value}\n"
    assert not (tmp_path / "lib.onnx").exists() and not (tmp_path / "cli.onnx").exists()
    return str(e.value)


def test_patch_cli_and_library_refuse_a_sha256_mismatch_alike(tmp_path, model_path, capsys):
    msg = refusal_by_both(tmp_path, model_path, write_artifact(tmp_path, "0" * 64), capsys)
    assert "sha256" in msg and "--force" in msg


def test_patch_cli_and_library_refuse_nodes_unsupported_on_onnxruntime_alike(tmp_path, model_path, capsys, monkeypatch):
    calibration = write_artifact(tmp_path, sha256_file(model_path))
    # the inserted graph always ends in NonMaxSuppression: make the EP gate refuse it
    monkeypatch.setattr(ep_support, "DETCAL_FORBIDDEN", ep_support.DETCAL_FORBIDDEN | {"NonMaxSuppression"})
    msg = refusal_by_both(tmp_path, model_path, calibration, capsys)
    assert "unsupported on onnxruntime" in msg and "NonMaxSuppression" in msg


def test_patch_cli_writes_what_patch_model_writes(tmp_path, model_path, capsys):
    calibration = write_artifact(tmp_path, sha256_file(model_path))
    lib = patch_model(model_path, calibration, tmp_path / "lib.onnx")
    assert main(["patch", "--model", str(model_path), "--calibration", str(calibration), "--out", str(tmp_path / "cli.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'cli.onnx'}" in out and "head xywh_cls (3 classes)" in out and "max_det 20" in out
    assert lib.read_bytes() == (tmp_path / "cli.onnx").read_bytes()


# ----------------------------------------------------------------- imports fail loudly

def test_a_broken_command_module_is_not_swallowed(monkeypatch):
    monkeypatch.delitem(sys.modules, "calib.cli")
    monkeypatch.setitem(sys.modules, "calib.cli.eval", None)     # importing it raises ImportError
    with pytest.raises(ImportError):
        importlib.import_module("calib.cli")


def test_a_broken_library_import_inside_a_command_is_not_swallowed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "calib.fitting", None)
    with pytest.raises(ImportError):
        main(["fit", "--model", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.yaml")])


def test_patch_cli_with_an_out_name_of_any_extension_and_a_calibration_with_a_bom(tmp_path, model_path, capsys):
    """The patched model is read back as bytes (onnx.load would pick a JSON reader for a .json
    name), and a calibration.json saved with a UTF-8 BOM (some Windows editors) loads."""
    calibration = write_artifact(tmp_path, sha256_file(model_path))
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + calibration.read_bytes())
    out = tmp_path / "model.detcal.json"
    assert main(["patch", "--model", str(model_path), "--calibration", str(bom), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes() == patch_model(model_path, calibration, tmp_path / "lib.onnx").read_bytes()
