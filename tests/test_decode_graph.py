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
from heads_factory import random_detr_raws, random_gfl_raws, random_yolox_raws
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

SHARED = Path(os.environ.get("DETCAL_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


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
