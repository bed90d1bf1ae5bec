"""onnx_ops.decode_graph equals calib.head_decoders on random heads of each family (Hypothesis).

The decode graph is built alone over bare head-output inputs (the graph "cut at the head"), run
on onnxruntime and compared with the numpy decoder: boxes xyxy within 1e-3 px (+ 1e-5 relative,
exp/softmax kernels differ by an ulp), scores within 1e-6. Every inserted name starts with
`detcal/`, the step passes onnx.checker, and its ops are covered on every EP of the table.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from calib.head_decoders import decode_head, level_counts
from heads_factory import random_detr_raws, random_gfl_raws, random_nanodet_raw, random_yolox_raws
from onnx_ops.decode_graph import boxes_xyxy, decode_head as decode_head_graph
from onnx_ops.ep_support import DETCAL_FORBIDDEN, check_nodes
from onnx_ops.graph_builder import GraphBuilder

OPSETS = (11, 13, 17)


def _input_shapes(layout, size, num_classes, reg_max, strides, two_outputs, queries, batch_axis):
    if layout == "yolox_raw":
        return [["B", sum(level_counts(size, (8, 16, 32), False)), 5 + num_classes]]
    if layout == "gfl_multilevel":
        counts = level_counts(size, strides, True)
        pre = ["B"] if batch_axis else []
        return [pre + [n, num_classes] for n in counts] + [pre + [n, 4 * (reg_max + 1)] for n in counts]
    return [["B", queries, 4], ["B", queries, num_classes]] if two_outputs else [["B", queries, 4 + num_classes]]


@functools.lru_cache(maxsize=32)
def _session(layout, size, num_classes, reg_max, strides, two_outputs, queries, batch_axis, logits, opset):
    shapes = _input_shapes(layout, size, num_classes, reg_max, strides, two_outputs, queries, batch_axis)
    names = [f"raw{i}" for i in range(len(shapes))]
    b = GraphBuilder(opset)
    params = {}
    if layout == "gfl_multilevel":
        params = {"counts": level_counts(size, strides, True), "reg_max": reg_max, "strides": strides,
                  "batch_axis": batch_axis}
    if layout == "detr":
        params = {"scores_are_logits": logits}
    dec = decode_head_graph(b, layout, names, size, **params)
    xyxy = boxes_xyxy(b, dec)
    outs = [helper.make_tensor_value_info(xyxy, TensorProto.FLOAT, ["B", "N", 4]),
            helper.make_tensor_value_info(dec.probs, TensorProto.FLOAT, ["B", "N", num_classes])]
    graph = helper.make_graph(b.nodes, "decode", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                  for n, s in zip(names, shapes)], outs, b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    for node in b.nodes:
        assert node.name.startswith("detcal/") and all(o.startswith("detcal/") for o in node.output)
    assert all(i.name.startswith("detcal/") for i in b.initializers)
    findings = check_nodes(b.nodes, opset, consts=b.const_values, forbid=DETCAL_FORBIDDEN)
    assert not findings, findings        # no error and no warning on any EP of the table
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, names, params


@st.composite
def _case(draw):
    layout = draw(st.sampled_from(("yolox_raw", "gfl_multilevel", "detr")))
    num_classes = draw(st.sampled_from((1, 2, 5, 80)))
    if layout == "yolox_raw":
        size = (32 * draw(st.integers(1, 6)), 32 * draw(st.integers(1, 6)))
    else:
        size = (draw(st.integers(33, 200)), draw(st.integers(33, 200)))   # ceil grids, any size
    reg_max = draw(st.sampled_from((7, 16)))
    strides = draw(st.sampled_from(((8, 16, 32), (8, 16, 32, 64))))
    batch_axis = draw(st.booleans()) if layout == "gfl_multilevel" else True
    batch = draw(st.integers(1, 3)) if batch_axis else 1
    return dict(layout=layout, size=size, num_classes=num_classes, reg_max=reg_max, strides=strides,
                two_outputs=draw(st.booleans()), queries=draw(st.sampled_from((1, 100, 300))),
                batch_axis=batch_axis, logits=draw(st.booleans()), opset=draw(st.sampled_from(OPSETS)),
                batch=batch, seed=draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_decode_graph_equals_numpy(case):
    rng = np.random.default_rng(case["seed"])
    layout, size, C, B = case["layout"], case["size"], case["num_classes"], case["batch"]
    if layout == "yolox_raw":
        raws = random_yolox_raws(rng, size, B, C)
    elif layout == "gfl_multilevel":
        raws = random_gfl_raws(rng, size, B, C, case["reg_max"], case["strides"])
        if not case["batch_axis"]:
            raws = [r[0] for r in raws]
    else:
        raws = random_detr_raws(rng, B, case["queries"], C, case["two_outputs"])
    key = {k: case[k] for k in ("layout", "size", "num_classes", "reg_max", "strides", "two_outputs", "queries",
                                "batch_axis", "logits", "opset")}
    sess, names, params = _session(**key)
    got_boxes, got_scores = sess.run(None, dict(zip(names, raws)))
    ref = decode_head(layout, raws, size, **params)
    assert got_boxes.shape == ref.boxes_xyxy.shape and got_scores.shape == ref.scores.shape
    np.testing.assert_allclose(got_boxes, ref.boxes_xyxy, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got_scores, ref.scores, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------
# dynamic height/width: the grid built in the graph from the image input's run-time shape
# ------------------------------------------------------------------------------------------
DYNAMIC_FAMILIES = ("yolox_raw", "gfl_multilevel", "nanodet_plus", "detr")


@functools.lru_cache(maxsize=16)
def _dynamic_session(family, num_classes, reg_max, opset):
    """One decode graph per family whose grid follows the shape of an `images` [B, 3, H, W] input."""
    from onnx_ops.decode_graph import image_hw

    b = GraphBuilder(opset)
    d = {"yolox_raw": [5 + num_classes], "nanodet_plus": [num_classes + 4 * (reg_max + 1)],
         "detr": [4 + num_classes]}.get(family)
    if family == "gfl_multilevel":
        strides = (8, 16, 32, 64)
        shapes = [["B", f"n{s}", num_classes] for s in strides] + [["B", f"n{s}", 4 * (reg_max + 1)] for s in strides]
        params = {"strides": strides, "reg_max": reg_max}
    else:
        shapes = [["B", "N", d[0]]]
        params = {"nanodet_plus": {"strides": (8, 16, 32, 64), "reg_max": reg_max, "single_output": True,
                                   "num_classes": num_classes, "cell_offset": 0.0},
                  "detr": {"scores_are_logits": True}}.get(family, {})
    layout = "gfl_multilevel" if family == "nanodet_plus" else family
    names = [f"raw{i}" for i in range(len(shapes))]
    dec = decode_head_graph(b, layout, names, image_hw(b, "images"), **params)
    xyxy = boxes_xyxy(b, dec)
    outs = [helper.make_tensor_value_info(xyxy, TensorProto.FLOAT, ["B", "N", 4]),
            helper.make_tensor_value_info(dec.probs, TensorProto.FLOAT, ["B", "N", num_classes])]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, "H", "W"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, sh) for n, sh in zip(names, shapes)]
    model = helper.make_model(helper.make_graph(b.nodes, "decode_dynamic", inputs, outs, b.initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    assert all(n.name.startswith("detcal/") and all(o.startswith("detcal/") for o in n.output) for n in b.nodes)
    assert all(i.name.startswith("detcal/") for i in b.initializers)
    findings = check_nodes(b.nodes, opset, consts=b.const_values, forbid=DETCAL_FORBIDDEN)
    assert not findings, findings        # Range, Expand, Shape ... covered on every EP of the table
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), names, layout, params


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DYNAMIC_FAMILIES), st.integers(1, 12), st.integers(1, 12), st.integers(0, 31),
       st.integers(0, 31), st.sampled_from((1, 4)), st.sampled_from(OPSETS), st.integers(0, 2**31 - 1))
def test_dynamic_size_decode_graph_equals_numpy(family, hc, wc, hr, wr, num_classes, opset, seed):
    """One graph per family, fed at many (H, W), square or not, multiples of the strides or not
    (ceil grids): the run-time grid equals calib.head_decoders at that size."""
    rng = np.random.default_rng(seed)
    reg_max = 7
    size = (16 * hc + hr, 16 * wc + wr)                 # any size: ceil grids
    if family == "yolox_raw":
        raws = random_yolox_raws(rng, size, 2, num_classes, ceil=True)
    else:
        if family == "gfl_multilevel":
            raws = random_gfl_raws(rng, size, 2, num_classes, reg_max, (8, 16, 32, 64))
        elif family == "nanodet_plus":
            raws = random_nanodet_raw(rng, size, 2, num_classes, reg_max)
        else:
            raws = random_detr_raws(rng, 2, 30, num_classes, False)
    sess, names, layout, params = _dynamic_session(family, num_classes, reg_max, opset)
    image = np.zeros((2, 3, *size), np.float32)
    got_boxes, got_scores = sess.run(None, {"images": image, **dict(zip(names, raws))})
    ref = decode_head(layout, raws, size, **params)
    assert got_boxes.shape == ref.boxes_xyxy.shape
    np.testing.assert_allclose(got_boxes, ref.boxes_xyxy, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got_scores, ref.scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ceil, offset", [(False, 0.0), (True, 0.5), (True, 0.0)])
def test_run_time_grid_is_the_numpy_grid_bit_for_bit(ceil, offset):
    """anchor_grid in the graph vs calib.head_decoders.anchor_points, exactly, square and not."""
    from calib.head_decoders import anchor_points
    from onnx_ops.decode_graph import anchor_grid, image_hw

    b = GraphBuilder(13)
    pts, strs = anchor_grid(b, image_hw(b, "images"), (8, 16, 32, 64), offset=offset, ceil=ceil, tag="t")
    model = helper.make_model(helper.make_graph(
        b.nodes, "grid", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info(pts, TensorProto.FLOAT, None),
         helper.make_tensor_value_info(strs, TensorProto.FLOAT, None)], b.initializers),
        opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for size in ((800, 608), (608, 800), (65, 200), (320, 320), (8, 8)):
        got_p, got_s = sess.run(None, {"images": np.zeros((1, 3, *size), np.float32)})
        want_p, want_s = anchor_points(size, (8, 16, 32, 64), offset=offset, ceil=ceil)
        np.testing.assert_array_equal(got_p[0], want_p)
        np.testing.assert_array_equal(got_s[0], want_s)


def test_grid_constants_follow_the_input_size():
    """Two input sizes -> two different grids; the graph's constants are exactly the numpy anchors."""
    from calib.head_decoders import anchor_points

    for size in ((64, 96), (96, 64)):
        b = GraphBuilder(13)
        decode_head_graph(b, "yolox_raw", ["raw"], size)
        grid = next(v for k, v in b.const_values.items() if "yolox_grid" in k)
        want, _ = anchor_points(size, (8, 16, 32), offset=0.0, ceil=False)
        np.testing.assert_array_equal(grid[0], want)


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown head layout"):
        decode_head_graph(GraphBuilder(13), "ssd", ["x"], (64, 64))


# ------------------------------------------------------------------------------------------
# real exports: the model with the decode appended equals the numpy decode of its outputs
# ------------------------------------------------------------------------------------------
import os  # noqa: E402
from pathlib import Path  # noqa: E402

SHARED = Path(os.environ.get("DETCAL_SHARED", Path(__file__).resolve().parents[1].parent / "shared")).resolve()


def _with_decode(model: onnx.ModelProto, rec) -> onnx.ModelProto:
    """The model plus the decode graph over its head outputs, outputs: head outputs + boxes_xyxy + scores."""
    from onnx_ops.ep_support import model_opset

    b = GraphBuilder(max(model_opset(model), 11))
    b.reserve({n for node in model.graph.node for n in node.output})
    dec = decode_head_graph(b, rec.layout, rec.outputs, rec.input_hw, **rec.params)
    xyxy = boxes_xyxy(b, dec)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.node.extend(b.nodes)
    m.graph.initializer.extend(b.initializers)
    m.graph.output.extend([helper.make_tensor_value_info(xyxy, TensorProto.FLOAT, None),
                           helper.make_tensor_value_info(dec.probs, TensorProto.FLOAT, None)])
    return m


@pytest.mark.parametrize("name", ["yolox_nano_coco_416.onnx", "picodet_s_coco_320.onnx"])
def test_real_model_with_decode_graph_equals_numpy(name):
    from calib.head_recognition import recognise_head
    from calib.images import read_image_rgb
    from calib.artifact import Preprocess
    from calib.preprocess import preprocess_image

    path = SHARED / "real" / "models" / name
    images = sorted((SHARED / "real" / "coco_train" / "images" / "val").glob("*.jpg"))[:3]
    if not path.exists() or not images:
        pytest.skip(f"{path} or its images absent (../shared/real is outside the project; set DETCAL_SHARED)")
    model = onnx.load(str(path))
    rec = recognise_head(model, str(path))
    sess = ort.InferenceSession(_with_decode(model, rec).SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for img in images:
        x, _ = preprocess_image(read_image_rgb(img), rec.input_hw, Preprocess())
        outs = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x[None] * 255})))
        ref = decode_head(rec.layout, [outs[n] for n in rec.outputs], rec.input_hw, **rec.params)
        got_boxes, got_scores = outs[names[-2]], outs[names[-1]]
        np.testing.assert_allclose(got_boxes, ref.boxes_xyxy, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got_scores, ref.scores, rtol=0, atol=1e-6)
