"""examples/serve: serve.py (Pillow + onnxruntime) and serve.mjs (sharp + onnxruntime-node) print the
detections of a model patched with the preprocessing embedded, with no glue code; the Python one
equals detcal's reference pipeline, the Node one equals the Python one."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "examples" / "serve"
EXAMPLE_MODEL = ROOT / "examples" / "models" / "detector_xywh_cls.onnx"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(embedded model path, {"jpg": path, "png": path}, raw session, artifact, model info)."""
    import onnxruntime as ort
    from artifact_factory import make_artifact
    from calib.model_info import read_model_info
    from examples.detector import scenes
    from onnx_ops import patch_model

    tmp = tmp_path_factory.mktemp("serve")
    info = read_model_info(EXAMPLE_MODEL)
    art = make_artifact(info.num_classes, calibrator="platt_per_class", thresholds=0.3, input_size=info.input_size)
    path = patch_model(EXAMPLE_MODEL, art, tmp / "detector.detcal.onnx", force=True, embed_preprocess=True)
    img = scenes.positive_scene(11, sizes=[(800, 450)])[0]
    photos = {"jpg": tmp / "scene.jpg", "png": tmp / "scene.png"}
    Image.fromarray(img).save(photos["jpg"], quality=92)
    Image.fromarray(img).save(photos["png"])
    raw = ort.InferenceSession(str(EXAMPLE_MODEL), providers=["CPUExecutionProvider"])
    return path, photos, raw, art, info


def parse(stdout: str) -> np.ndarray:
    """Lines `class score x1 y1 x2 y2` -> (N, 6) float64."""
    rows = [list(map(float, line.split())) for line in stdout.strip().splitlines() if line.strip()]
    return np.asarray(rows, np.float64).reshape(-1, 6)


def run(cmd, cwd=SERVE) -> np.ndarray:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return parse(done.stdout)


def assert_same(a: np.ndarray, b: np.ndarray, score_tol: float, box_tol: float) -> None:
    assert a.shape == b.shape, (a, b)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    np.testing.assert_allclose(a[:, 1], b[:, 1], atol=score_tol)
    np.testing.assert_allclose(a[:, 2:], b[:, 2:], atol=box_tol)


def python_output(served, kind: str) -> np.ndarray:
    path, photos, *_ = served
    return run([sys.executable, str(SERVE / "serve.py"), str(path), str(photos[kind])])


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_serve_py_equals_the_reference_pipeline(served, kind):
    from test_preprocess_graph import reference_detections
    _, photos, raw, art, info = served
    img = np.asarray(Image.open(photos[kind]).convert("RGB"))
    ref = reference_detections([img], raw, art, info)
    n = int(ref["num_dets"][0, 0])
    assert n > 0
    expected = np.column_stack([ref["det_classes"][0, :n], ref["det_scores"][0, :n], ref["det_boxes"][0, :n]])
    assert_same(python_output(served, kind), expected, score_tol=1e-4, box_tol=0.02)   # printed with 5 / 2 decimals


def test_serve_py_is_short_and_glue_free():
    source = (SERVE / "serve.py").read_text()
    body = source.split('"""', 2)[-1]            # after the module docstring
    code = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 20, len(code)
    imports = {line.split()[1] for line in code if line.startswith(("import ", "from "))}
    assert imports <= {"sys", "numpy", "onnxruntime", "PIL"}, imports


def node_ready() -> str | None:
    """Why the Node example cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (see examples/serve/README.md: apt-get install nodejs npm)"
    missing = [p for p in ("onnxruntime-node", "sharp") if not (SERVE / "node_modules" / p).is_dir()]
    if missing:
        return f"{', '.join(missing)} not installed: run `npm install` in examples/serve (see its README)"
    return None


@pytest.mark.parametrize("kind", ["png", "jpg"])
def test_serve_mjs_prints_what_serve_py_prints(served, kind):
    reason = node_ready()
    if reason:
        pytest.skip(reason)
    path, photos, *_ = served
    node = run(["node", str(SERVE / "serve.mjs"), str(path), str(photos[kind])])
    py = python_output(served, kind)
    assert len(py) > 0
    if kind == "png":   # lossless: both decoders give the same pixels
        assert_same(node, py, score_tol=2e-5, box_tol=0.011)
    else:               # libjpeg-turbo (Pillow) and libvips' decoder may differ by a grey level here and there
        assert_same(node, py, score_tol=5e-3, box_tol=1.0)
