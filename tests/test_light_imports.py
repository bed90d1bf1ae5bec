"""The graph side and the contract import light: no scipy, PIL, matplotlib or data loaders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy", "PIL", "matplotlib", "calib.data", "calib.fitting", "calib.calibrators", "calib.thresholds")


def _loaded_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter (this checkout first on the path) -> the HEAVY modules it loaded."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("code", [
    "import calib.artifact",
    "import onnx_ops\nfrom onnx_ops import patch_model, build_postprocess_graph\n"
    "import onnx_ops.patch, onnx_ops.ep_support, onnx_ops.inspect, onnx_ops.variants\n"
    "import calib; calib.Artifact; calib.PostprocessConfig; calib.__version__",
])
def test_import_loads_no_heavy_module(code):
    assert _loaded_after(code) == []


def test_the_probe_sees_heavy_modules():
    """The check above can fail: the fitting side does load them."""
    loaded = _loaded_after("import calib.fitting")
    assert "scipy" in loaded and "calib.data" in loaded


def test_lazy_public_names_resolve():
    import calib
    import onnx_ops
    from calib.artifact import DETCAL_VERSION

    assert calib.__version__ == DETCAL_VERSION
    assert callable(calib.letterbox_image) and callable(calib.postprocess) and callable(onnx_ops.patch_model)
    with pytest.raises(AttributeError):
        calib.no_such_name
    with pytest.raises(AttributeError):
        onnx_ops.no_such_name
