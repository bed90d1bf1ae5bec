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
