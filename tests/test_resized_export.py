"""benchmarks/resized_export: the real YOLOv8n int8 export rebuilt for 320 px and for 384 x 640 runs,
keeps its outputs at its own size, and patched there equals the numpy reference on real photos (a
trained model served at another resolution; a [1, 84, 2100] head, and a rectangular [1, 84, 5040]
one). Skipped where ../shared/real is absent."""
from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_real  # noqa: E402
from resized_export import anchor_grid, at_input_size  # noqa: E402

from artifact_factory import assert_same_detections, make_artifact, make_calibration  # noqa: E402
from calib.pipeline import pack_fixed, postprocess  # noqa: E402
from calib.session import make_session  # noqa: E402
from onnx_ops.patch import build_patched_model  # noqa: E402

REAL_MODEL, REAL_IMAGES = bench_real.REAL_MODEL, bench_real.REAL_IMAGES
needs_real = pytest.mark.skipif(not (REAL_MODEL.exists() and REAL_IMAGES.is_dir()),
                                reason=f"{REAL_MODEL} or {REAL_IMAGES} absent (../shared/real is outside the project)")


def test_anchor_grid_counts_and_centres():
    for size in (320, 416, 640):
        points, strides = anchor_grid(size)
        n = sum((size // s) ** 2 for s in (8, 16, 32))
        assert points.shape == (1, 2, n) and strides.shape == (1, n)
        # every cell centre, scaled by its stride, lies inside the input
        assert (points * strides[:, None] > 0).all() and (points * strides[:, None] < size).all()
    points, strides = anchor_grid(320)
    np.testing.assert_array_equal(points[0, :, :2], [[0.5, 1.5], [0.5, 0.5]])
    assert strides[0, 1600] == 16 and strides[0, -1] == 32


def test_anchor_grid_rectangular_is_rows_of_cells():
    """(H, W): H / s rows of W / s cells per stride, row by row (Ultralytics' make_anchors), and a
    square size the same as S."""
    points, strides = anchor_grid((384, 640))
    assert points.shape == (1, 2, 48 * 80 + 24 * 40 + 12 * 20) and strides.shape == (1, 5040)
    np.testing.assert_array_equal(points[0, :, 79], [79.5, 0.5])      # the first row's last cell
    np.testing.assert_array_equal(points[0, :, 80], [0.5, 1.5])       # the second row's first
    px = points[0] * strides[0]
    assert px[0].max() < 640 and px[1].max() < 384 and (px > 0).all()
    for a, b in zip(anchor_grid(320), anchor_grid((320, 320))):
        np.testing.assert_array_equal(a, b)


def test_at_input_size_rejects_what_it_cannot_rebuild():
    with pytest.raises(ValueError, match="multiple of 32"):
        at_input_size(onnx.ModelProto(), 300)
    with pytest.raises(ValueError, match="multiple of 32"):
        at_input_size(onnx.ModelProto(), (384, 600))
    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 64, 64])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    with pytest.raises(ValueError, match="anchor grid"):
        at_input_size(onnx.helper.make_model(g), 320)


@functools.lru_cache(maxsize=None)
def real_inputs(size, n: int = 3):
    """The first n real photos, letterboxed as the benchmarks do (bench_real.real_inputs)."""
    return bench_real.real_inputs(size, n)


@functools.lru_cache(maxsize=None)
def resized(size) -> onnx.ModelProto:
    return at_input_size(onnx.load(str(REAL_MODEL)), size)


def _detections_equal_reference(raw, patched, art, size, context: str, n: int = 3) -> int:
    """The patched session's outputs on the first n real photos are calib.pipeline's on the raw session's
    head (assert_same_detections); -> how many detections were compared (0: nothing was)."""
    x, rows = real_inputs(size, n)
    total = 0
    for i in range(n):
        out = raw.run(None, {"images": x[i:i + 1]})[0]
        ref = pack_fixed(postprocess(out, "xywh_cls", rows[i:i + 1], art.calibration, art.score_thresholds, art.nms),
                         art.nms.max_det)
        got = dict(zip([o.name for o in patched.get_outputs()],
                       patched.run(None, {"images": x[i:i + 1], "letterbox": rows[i:i + 1]})))
        assert_same_detections(got, ref, context=f"{context}, image {i}")
        total += int(ref["num_dets"].sum())
    return total


@needs_real
def test_same_size_is_the_same_model_and_320_gives_the_2100_anchor_head():
    x, _ = real_inputs(640, 1)
    same = make_session(resized(640), threads=2).run(None, {"images": x})[0]
    want = make_session(REAL_MODEL, threads=2).run(None, {"images": x})[0]
    np.testing.assert_array_equal(same, want)
    x320, _ = real_inputs(320, 3)
    sess = make_session(resized(320), threads=2)
    out = np.concatenate([sess.run(None, {"images": x320[i:i + 1]})[0] for i in range(3)])
    assert out.shape == (3, 84, 2100) and np.isfinite(out).all()
    assert out[:, 4:].max() > 0.5                     # the trained model still finds objects at 320
    assert (out[:, :4].max() < 400) and (out[:, 2:4] > 0).all()   # boxes in 320-px input units


@needs_real
def test_rectangular_rebuild_finds_what_the_640_export_finds():
    """The real export rebuilt for 384 x 640 (a 16:9 camera's export): a [1, 84, 5040] head whose boxes
    lie in the 640 x 384 input and whose best class on each real photo the 640 export finds too
    (above 0.5; a portrait photo is smaller in a landscape input, so the ranking may differ)."""
    sess = make_session(resized((384, 640)), threads=2)
    x, _ = real_inputs((384, 640), 3)
    x640, _ = real_inputs(640, 3)
    ref = make_session(REAL_MODEL, threads=2)
    for i in range(3):
        out = sess.run(None, {"images": x[i:i + 1]})[0]
        want = ref.run(None, {"images": x640[i:i + 1]})[0]
        assert out.shape == (1, 84, 5040) and np.isfinite(out).all()
        assert out[0, 0].max() < 660 and out[0, 1].max() < 400 and (out[0, 2:4] > 0).all()
        assert out[0, 4:].max() > 0.5
        best = out[0, 4:].max(1).argmax()
        assert want[0, 4 + best].max() > 0.5, f"image {i}: class {best} is not among the 640 export's"


@needs_real
@pytest.mark.parametrize("size", [320, (384, 640)], ids=["320", "384x640"])
@pytest.mark.parametrize("kind", ["identity", "temperature", "platt_box"])
def test_real_model_resized_patched_equals_reference(kind, size, tmp_path):
    """The trained head at 320 and at 384 x 640 (continuous real scores; a rectangular input with its
    letterbox bars top and bottom), patched: the same detections as calib.pipeline's reference,
    box-aware map included (its weighted margin, exact logs, centre distance in a W != H input)."""
    hw = (size, size) if isinstance(size, int) else size
    model = resized(size)
    path = tmp_path / f"yolov8n_coco_int8_at{hw[0]}x{hw[1]}.onnx"
    onnx.save(model, str(path))
    cal = make_calibration(kind, 80, np.random.default_rng(3))
    if kind == "platt_box":
        cal = dataclasses.replace(cal, input_size=hw)
    art = make_artifact(80, calibrator=cal, thresholds=0.3, input_size=hw)
    patched = make_session(build_patched_model(path, art, force=True).model, threads=2)
    raw = make_session(model, threads=2)
    assert _detections_equal_reference(raw, patched, art, size, f"real yolov8n at {hw}, {kind}") > 0


@needs_real
@pytest.mark.parametrize("size", [320, 640])
def test_real_model_fixed_shape_box_aware_graph_equals_reference(size, tmp_path):
    """The fixed-shape graph (TensorRT) of a box-aware map, every (box, class) pair calibrated and masked,
    on the real head at 320 and 640: the reference's detections, and no NonZero."""
    model = resized(size)
    path = tmp_path / f"yolov8n_coco_int8_at{size}.onnx"
    onnx.save(model, str(path))
    cal = dataclasses.replace(make_calibration("platt_box", 80, np.random.default_rng(4)), input_size=(size, size))
    art = make_artifact(80, calibrator=cal, thresholds=0.3, input_size=(size, size))
    result = build_patched_model(path, art, force=True, static_shapes=True)
    assert "NonZero" not in {n.op_type for n in result.model.graph.node}
    patched, raw = make_session(result.model, threads=2), make_session(model, threads=2)
    assert _detections_equal_reference(raw, patched, art, size, f"real yolov8n at {size}, fixed-shape platt_box") > 0
