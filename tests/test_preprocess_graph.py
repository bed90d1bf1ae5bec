"""onnx_ops.preprocess_graph: the embedded preprocessing equals calib.resize's numpy twin, runs
on every EP of the support table, passes the full checker and names everything `detcal/`."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from calib import resize as R
from onnx_ops.ep_support import DETCAL_FORBIDDEN, coverage
from onnx_ops.preprocess_graph import PreprocessGraphSpec, build_preprocess_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared"))
REAL_IMAGES = SHARED / "real" / "coco_train" / "images" / "val"

SPECS = [
    PreprocessGraphSpec((64, 64)),
    PreprocessGraphSpec((48, 80), placement="top_left", pad_value=0, model_channel_order="BGR",
                        image_channel_order="BGR", mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3),
    PreprocessGraphSpec((80, 48), placement="bottom_right", model_channel_order="BGR"),
    PreprocessGraphSpec((40, 56), mode="stretch", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
]


@functools.lru_cache(maxsize=None)
def session(spec: PreprocessGraphSpec, frame_hw=None, opset: int = 18) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    model = build_preprocess_model(spec, frame_hw=frame_hw, opset=opset)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def reference(image: np.ndarray, spec: PreprocessGraphSpec) -> tuple[np.ndarray, np.ndarray]:
    """numpy: the image in the caller's channel order -> ((3, h, w) model input, row (6,))."""
    rgb = image[..., ::-1] if spec.image_channel_order == "BGR" else image
    canvas, row = R.letterbox_resize(rgb, spec.size_hw, mode=spec.mode, placement=spec.placement,
                                     pad_value=spec.pad_value)
    return R.to_model_input(canvas, spec.model_channel_order, spec.mean, spec.std), row


def grey_levels(a: np.ndarray, b: np.ndarray, spec: PreprocessGraphSpec) -> float:
    """Max abs difference of two model inputs, in 0..255 grey levels."""
    std = np.asarray(spec.std, np.float64).reshape(3, 1, 1)
    if spec.model_channel_order == "BGR":
        std = std[::-1]
    return float((np.abs(a.astype(np.float64) - b) * std * 255).max())


def assert_equivalent(image, spec, frame_hw=None, opset=18, tol=0.01):
    """Graph vs numpy, within `tol` grey levels (the contract is <= 1; both stay float32)."""
    sess = session(spec, frame_hw, opset)
    feed = image if frame_hw is None else image[None]
    x, row = sess.run(None, {sess.get_inputs()[0].name: feed})
    ref_x, ref_row = reference(image, spec)
    assert x.shape == (1, 3, *spec.size_hw) and x.dtype == np.float32
    assert grey_levels(x[0], ref_x, spec) <= tol
    np.testing.assert_allclose(row[0], ref_row, rtol=1e-6)


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 260), st.integers(1, 260), st.sampled_from(range(len(SPECS))), st.integers(0, 2**32 - 1))
def test_image_graph_equals_numpy_on_random_images(h, w, which, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert_equivalent(img, SPECS[which])


@pytest.mark.parametrize("opset", [11, 13])
def test_older_opsets(opset):
    rng = np.random.default_rng(opset)
    for h, w in [(33, 170), (170, 33), (64, 64), (1, 500)]:
        assert_equivalent(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), SPECS[0], opset=opset)


@settings(deadline=None, max_examples=12)
@given(st.sampled_from([(48, 64), (64, 48), (64, 64), (30, 200), (100, 100)]),
       st.sampled_from(range(len(SPECS))), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_frames_graph_equals_numpy_per_frame(frame_hw, which, batch, seed):
    spec = SPECS[which]
    frames = np.random.default_rng(seed).integers(0, 256, (batch, *frame_hw, 3), dtype=np.uint8)
    x, rows = session(spec, frame_hw).run(None, {"frames": frames})
    assert x.shape == (batch, 3, *spec.size_hw) and rows.shape == (batch, 6)
    for i in range(batch):
        ref_x, ref_row = reference(frames[i], spec)
        assert grey_levels(x[i], ref_x, spec) <= 0.01
        np.testing.assert_allclose(rows[i], ref_row, rtol=1e-6)


@pytest.mark.parametrize("frame_hw", [None, (72, 128)])
@pytest.mark.parametrize("spec", SPECS)
def test_checker_coverage_and_names(spec, frame_hw):
    model = build_preprocess_model(spec, frame_hw=frame_hw)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    reports = coverage(model, forbid=DETCAL_FORBIDDEN)
    for ep, rep in reports.items():
        assert rep.covered, (ep, rep.summary())
    assert not [w for w in reports["cuda"].warnings if "CPU" in w.reason]      # every op has a CUDA kernel
    for node in model.graph.node:
        assert node.name.startswith("detcal/")
        assert all(o.startswith("detcal/") or o in ("input", "letterbox") for o in node.output)
    assert all(i.name.startswith("detcal/") for i in model.graph.initializer)
    ops = {n.op_type for n in model.graph.node}
    assert "Resize" in ops or frame_hw is not None


def test_resize_node_attributes():
    model = build_preprocess_model(SPECS[0])
    (node,) = [n for n in model.graph.node if n.op_type == "Resize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["mode"] == b"linear" and attrs["coordinate_transformation_mode"] == b"half_pixel"
    assert not attrs.get("antialias", 0)


@pytest.mark.parametrize("kwargs,msg", [({"mode": "crop"}, "mode"), ({"placement": "middle"}, "placement"),
                                        ({"model_channel_order": "GRB"}, "channel order"),
                                        ({"pad_value": -1}, "pad_value"), ({"size_hw": (0, 64)}, "size_hw")])
def test_bad_spec_is_refused(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PreprocessGraphSpec(**{"size_hw": (64, 64), **kwargs})


def real_images(n: int) -> list[np.ndarray]:
    if not REAL_IMAGES.is_dir():
        pytest.skip(f"real images absent: {REAL_IMAGES} (../shared/real lives beside the repository)")
    paths = sorted(p for p in REAL_IMAGES.glob("*.jpg") if "_bg" not in p.name)[:n]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.mark.parametrize("spec", [PreprocessGraphSpec((640, 640)), SPECS[2], SPECS[3]])
def test_real_images(spec):
    for img in real_images(4):
        assert_equivalent(img, spec)
