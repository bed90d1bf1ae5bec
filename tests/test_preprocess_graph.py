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
SHARED = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared")).resolve()
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


# ------------------------------------------------------------------------------------------
# embedding in front of a model
# ------------------------------------------------------------------------------------------
def tiny_model(size_hw=(48, 64), batch="batch", nhwc=False, dtype=onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """One Conv (3 -> 4 channels) on `images` [B, 3, h, w] (or NHWC via a Transpose), output `out`."""
    from onnx import helper, numpy_helper
    h, w = size_hw
    weight = np.random.default_rng(7).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes, x = [], "images"
    if dtype != onnx.TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], ["images_f32"], to=onnx.TensorProto.FLOAT))
        x = "images_f32"
    if nhwc:
        nodes.append(helper.make_node("Transpose", [x], ["images_nchw"], perm=[0, 3, 1, 2]))
        x = "images_nchw"
    nodes.append(helper.make_node("Conv", [x, "w"], ["out"], pads=[1, 1, 1, 1], name="conv"))
    shape = [batch, h, w, 3] if nhwc else [batch, 3, h, w]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", dtype, shape)],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [batch, 4, h, w])],
                              initializer=[numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def embedded(model, spec, frame_hw=None):
    from onnx import helper

    from onnx_ops.graph_builder import GraphBuilder
    from onnx_ops.preprocess_graph import embed_preprocess
    b = GraphBuilder(17)
    e = embed_preprocess(model.graph, b, "images", spec, frame_hw=frame_hw)
    model.graph.initializer.extend(b.initializers)
    model.graph.output.append(helper.make_tensor_value_info(e.row, onnx.TensorProto.FLOAT, [None, 6]))
    onnx.checker.check_model(model, full_check=True)
    return e, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("variant", ["nchw", "nhwc", "float16", "frames"])
def test_embedded_model_equals_numpy_preprocessing_then_the_raw_model(variant):
    spec = SPECS[2]
    kwargs = {"nhwc": variant == "nhwc", "dtype": onnx.TensorProto.FLOAT16 if variant == "float16" else onnx.TensorProto.FLOAT}
    kwargs["size_hw"] = spec.size_hw
    frame_hw = (90, 100) if variant == "frames" else None
    e, sess = embedded(tiny_model(**kwargs), spec, frame_hw)
    raw = ort.InferenceSession(tiny_model(**kwargs).SerializeToString(), providers=["CPUExecutionProvider"])
    assert e.input_name == ("frames" if frame_hw else "image") and [i.name for i in sess.get_inputs()] == [e.input_name]
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (90, 100, 3), dtype=np.uint8) for _ in range(2)]
    if frame_hw is None:
        images.append(rng.integers(0, 256, (17, 333, 3), dtype=np.uint8))
    for img in images:
        out, row = sess.run(None, {e.input_name: img[None] if frame_hw else img})
        x, ref_row = reference(img, spec)
        x = x[None].transpose(0, 2, 3, 1) if kwargs["nhwc"] else x[None]
        if variant == "float16":
            x = x.astype(np.float16)
        ref = raw.run(None, {"images": x})[0]
        np.testing.assert_allclose(out, ref, atol=1e-2 if variant == "float16" else 1e-4)   # float16: 1 ulp of an input
        np.testing.assert_allclose(row[0], ref_row, rtol=1e-6)


@pytest.mark.parametrize("model_kwargs,frame_hw,msg", [
    ({"size_hw": (32, 32)}, None, "input size"),
    ({"batch": 4}, None, "fixed batch"),
    ({"dtype": onnx.TensorProto.UINT8}, None, "uint8 .raw 0..255 pixels. but the preprocessing scales"),
])
def test_embedding_refuses_what_it_cannot_feed(model_kwargs, frame_hw, msg):
    from calib.errors import DetcalError
    with pytest.raises(DetcalError, match=msg):
        embedded(tiny_model(**model_kwargs), SPECS[0] if "size_hw" in model_kwargs else PreprocessGraphSpec((48, 64)),
                 frame_hw)


# ------------------------------------------------------------------------------------------
# the whole patched model with the preprocessing embedded
# ------------------------------------------------------------------------------------------
EXAMPLE_MODEL = ROOT / "examples" / "models" / "detector_xywh_cls.onnx"
REAL_MODEL = SHARED / "real" / "models" / "yolov8n_coco_int8.onnx"


def embedded_patched(src: Path, art, *, frame_hw=None, image_order=None) -> onnx.ModelProto:
    from onnx_ops.patch import build_patched_model
    return build_patched_model(src, art, force=True, embed_preprocess=True, frame_size=frame_hw,
                               input_channel_order=image_order).model


@functools.lru_cache(maxsize=None)
def example_pair(calibrator: str = "platt_per_class", frame_hw=None):
    """(embedded session, raw session, artifact, model info) for the project's own detector."""
    from artifact_factory import make_artifact
    from calib.model_info import read_model_info
    info = read_model_info(EXAMPLE_MODEL)
    art = make_artifact(info.num_classes, calibrator=calibrator, thresholds=0.3, input_size=info.input_size)
    model = embedded_patched(EXAMPLE_MODEL, art, frame_hw=frame_hw)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    emb = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return emb, ort.InferenceSession(str(EXAMPLE_MODEL), so, providers=["CPUExecutionProvider"]), art, info


def reference_detections(images, raw, art, info) -> dict:
    """numpy letterbox (calib.resize) + raw model + calib.pipeline's reference post-processing."""
    from calib.pipeline import pack_fixed, postprocess
    pre = art.preprocess
    xs, rows = [], []
    for img in images:
        canvas, row = R.letterbox_resize(img, info.input_size, mode=pre.resize, pad_value=pre.pad_value)
        xs.append(R.to_model_input(canvas, pre.channel_order, pre.mean, pre.std))
        rows.append(row)
    out = raw.run(None, {info.input_name: np.stack(xs)})[0]
    dets = postprocess(out, info.layout, np.stack(rows).astype(np.float32), art.calibration, art.score_thresholds, art.nms)
    return pack_fixed(dets, art.nms.max_det)


def run_embedded(sess, feed) -> dict:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: feed})))


@settings(deadline=None, max_examples=25)
@given(st.integers(40, 900), st.integers(40, 900), st.integers(0, 2**31 - 1),
       st.sampled_from(["identity", "platt_per_class", "isotonic_per_class"]))
def test_embedded_patched_model_equals_reference_pipeline(w, h, seed, calibrator):
    from artifact_factory import assert_same_detections
    from examples.detector import scenes
    emb, raw, art, info = example_pair(calibrator)
    img = scenes.positive_scene(seed, sizes=[(w, h)])[0]
    got, ref = run_embedded(emb, img), reference_detections([img], raw, art, info)
    assert_same_detections(got, ref, box_tol=1e-2, score_tol=1e-4, ties_unordered=True, context=f"{w}x{h}")


def test_embedded_model_finds_the_objects_in_the_images_own_pixels():
    from calib.boxes import box_iou
    from examples.detector import scenes
    emb, _, _, _ = example_pair("identity")
    hits = total = 0
    for seed in range(6):
        img, boxes, classes = scenes.positive_scene(100 + seed)
        got = run_embedded(emb, img)
        n = int(got["num_dets"][0, 0])
        assert np.all(got["det_boxes"][0, :n, 2] <= img.shape[1]) and np.all(got["det_boxes"][0, :n, 3] <= img.shape[0])
        if n:
            iou = box_iou(boxes.astype(np.float64), got["det_boxes"][0, :n].astype(np.float64))
            hits += int((iou.max(axis=1) >= 0.5).sum())
        total += len(boxes)
    assert hits >= 0.6 * total, (hits, total)


def test_embedded_frames_batch_equals_reference_per_frame():
    from artifact_factory import assert_same_detections
    from examples.detector import scenes
    emb, raw, art, info = example_pair("platt_per_class", (360, 640))
    frames = np.stack([scenes.positive_scene(s, sizes=[(640, 360)])[0] for s in range(3)])
    got = run_embedded(emb, frames)
    assert got["det_boxes"].shape == (3, art.nms.max_det, 4)
    ref = reference_detections(list(frames), raw, art, info)
    assert ref["num_dets"].min() > 0
    assert_same_detections(got, ref, box_tol=1e-2, score_tol=1e-4, ties_unordered=True)


def test_embedded_patched_model_checks_and_coverage():
    from artifact_factory import make_artifact
    from calib.model_info import read_model_info
    info = read_model_info(EXAMPLE_MODEL)
    art = make_artifact(info.num_classes, thresholds=0.3, input_size=info.input_size)
    for frame_hw in (None, (720, 1280)):
        model = embedded_patched(EXAMPLE_MODEL, art, frame_hw=frame_hw, image_order="BGR")
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == ["image" if frame_hw is None else "frames"]
        assert [o.name for o in model.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        batch = {o.type.tensor_type.shape.dim[0].dim_value or o.type.tensor_type.shape.dim[0].dim_param
                 for o in model.graph.output}
        assert batch == ({1} if frame_hw is None else {"batch"}), batch
        inserted = [n for n in model.graph.node if n.name.startswith("detcal/")]
        assert {"Resize", "Pad"} <= {n.op_type for n in inserted} or frame_hw is not None
        reports = coverage(onnx.ModelProto(graph=onnx.GraphProto(node=inserted, initializer=model.graph.initializer),
                                           opset_import=model.opset_import), forbid=DETCAL_FORBIDDEN)
        assert reports["cpu"].covered and reports["cuda"].covered, (reports["cpu"].summary(), reports["cuda"].summary())


def test_embedded_model_takes_the_other_channel_order_when_asked():
    from artifact_factory import make_artifact
    from calib.model_info import read_model_info
    info = read_model_info(EXAMPLE_MODEL)
    art = make_artifact(info.num_classes, calibrator="identity", thresholds=0.3, input_size=info.input_size)
    rgb = ort.InferenceSession(embedded_patched(EXAMPLE_MODEL, art).SerializeToString(), providers=["CPUExecutionProvider"])
    bgr = ort.InferenceSession(embedded_patched(EXAMPLE_MODEL, art, image_order="BGR").SerializeToString(),
                               providers=["CPUExecutionProvider"])
    from examples.detector import scenes
    img = scenes.positive_scene(5)[0]
    a, b = run_embedded(rgb, img), run_embedded(bgr, np.ascontiguousarray(img[..., ::-1]))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_real_model_on_real_images():
    from artifact_factory import assert_same_detections, make_artifact
    from calib.model_info import read_model_info
    if not REAL_MODEL.exists():
        pytest.skip(f"real model absent: {REAL_MODEL} (../shared/real lives beside the repository)")
    images = real_images(3)
    info = read_model_info(REAL_MODEL)
    art = make_artifact(80, calibrator="platt_per_class", thresholds=0.2, input_size=info.input_size)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    emb = ort.InferenceSession(embedded_patched(REAL_MODEL, art).SerializeToString(), so, providers=["CPUExecutionProvider"])
    raw = ort.InferenceSession(str(REAL_MODEL), so, providers=["CPUExecutionProvider"])
    found = 0
    for img in images:
        ref = reference_detections([img], raw, art, info)
        assert_same_detections(run_embedded(emb, img), ref, box_tol=1e-2, score_tol=1e-4, ties_unordered=True)
        found += int(ref["num_dets"][0, 0])
    assert found > 0


def test_cli_patch_embed_preprocess(tmp_path, capsys):
    import json

    from artifact_factory import make_artifact
    from calib.cli import main
    from calib.model_info import read_model_info
    info = read_model_info(EXAMPLE_MODEL)
    cal = make_artifact(info.num_classes, thresholds=0.3, input_size=info.input_size).save(tmp_path / "cal.json")
    base = ["patch", "--model", str(EXAMPLE_MODEL), "--calibration", str(cal), "--force"]
    out = tmp_path / "m.detcal.onnx"
    assert main([*base, "--out", str(out), "--embed-preprocess", "--frame-size", "360x640",
                 "--input-channel-order", "BGR"]) == 0
    assert "frames uint8 [B, 360, 640, 3] BGR" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["frames"]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["detcal"])
    assert list(meta["inputs"]) == ["frames"] and meta["preprocess"]["channel_order"] == "RGB"
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "frames: uint8 [batch, 360, 640, 3]" in shown
    assert [line.split()[-1] for line in shown.splitlines() if line.strip().startswith(("onnxruntime", "TensorRT"))] \
        == ["covered"] * 4, shown
    assert main([*base, "--out", str(tmp_path / "x.onnx"), "--frame-size", "360x640"]) == 2
    assert "--embed-preprocess" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_eval_runs_an_embedded_model(tmp_path, capsys):
    """An --embed-preprocess model given to `detcal eval --patched` is fed the decoded images
    (tests/test_eval_embedded.py compares it with the plain patched model)."""
    from artifact_factory import make_artifact
    from calib.cli import main
    from calib.model_info import read_model_info
    from examples.detector.scenes import write_dataset

    info = read_model_info(EXAMPLE_MODEL)
    cal = make_artifact(info.num_classes, thresholds=0.3, input_size=info.input_size).save(tmp_path / "cal.json")
    out = tmp_path / "m.detcal.onnx"
    assert main(["patch", "--model", str(EXAMPLE_MODEL), "--calibration", str(cal), "--force", "--out", str(out),
                 "--embed-preprocess"]) == 0
    capsys.readouterr()
    data = write_dataset(tmp_path / "data", n_val_pos=1, n_val_neg=1, n_test_pos=2, n_test_neg=1, seed=3)
    rc = main(["eval", "--model", str(EXAMPLE_MODEL), "--patched", str(out), "--data", str(data), "--quiet",
               "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert (tmp_path / "eval" / "eval.json").exists()


def test_static_shapes_with_the_box_aware_map_is_a_fixed_shape_graph(tmp_path):
    """The fixed-shape variant has a box-aware twin (every box-class pair, masked): what calls itself
    fixed-shape never compacts with NonZero; the default keeps the box-aware graph."""
    from artifact_factory import make_artifact
    from calib.model_info import read_model_info
    from onnx_ops.patch import build_patched_model

    info = read_model_info(EXAMPLE_MODEL)
    art = make_artifact(info.num_classes, calibrator="platt_box", thresholds=0.3, input_size=info.input_size)
    fixed = build_patched_model(EXAMPLE_MODEL, art, force=True, static_shapes=True)
    assert "NonZero" not in {n.op_type for n in fixed.model.graph.node if n.name.startswith("detcal/")}
    assert '"static_shapes": true' in {p.key: p.value for p in fixed.model.metadata_props}["detcal"]
    result = build_patched_model(EXAMPLE_MODEL, art, force=True)          # default: the box-aware graph
    meta = {p.key: p.value for p in result.model.metadata_props}["detcal"]
    assert '"static_shapes": false' in meta
