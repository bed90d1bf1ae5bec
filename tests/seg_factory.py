"""Small segmentation detectors (Ultralytics -seg topology) built in code, random or blob weights.

Ultralytics' Segment head exports output0 = Concat(Concat(boxes, Sigmoid(cls)), coeffs) [B, 4+C+M, N]
(the two Concats are sometimes merged into one with three inputs) and output1 = prototypes
[B, M, H/4, W/4]. `concat` picks the form: "nested", "flat" (one three-input Concat), or "plain"
(the Concat is followed by an Identity, so nothing can be tapped and the graph slices the head).

    random_seg_model(size, C, M, concat, batch, seed)   random 1x1 conv head over 4x4 max-pooled cells
    seg_blob_detector(path, C, M, concat)               the blob detector (tests/synthetic.py) with
                                                        coefficient and prototype branches: it
                                                        really detects the coloured squares
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from synthetic import make_blob_detector

CONCATS = ("nested", "flat", "plain")


def _head_concat(boxes: str, probs: str, coeffs: str, concat: str) -> list:
    """Nodes writing output0 from boxes [B, 4, N], probs [B, C, N], coeffs [B, M, N]."""
    if concat == "nested":
        return [helper.make_node("Concat", [boxes, probs], ["det"], axis=1),
                helper.make_node("Concat", ["det", coeffs], ["output0"], axis=1)]
    if concat == "flat":
        return [helper.make_node("Concat", [boxes, probs, coeffs], ["output0"], axis=1)]
    if concat == "plain":
        return [helper.make_node("Concat", [boxes, probs, coeffs], ["cat"], axis=1),
                helper.make_node("Identity", ["cat"], ["output0"])]
    raise ValueError(concat)


def random_seg_model(size: int = 64, num_classes: int = 20, masks: int = 32, concat: str = "nested",
                     batch="batch", opset: int = 17, seed: int = 0, task_metadata: bool = True) -> onnx.ModelProto:
    """images [B, 3, size, size] -> output0 [B, 4+C+M, (size/4)^2], output1 [B, M, size/4, size/4]."""
    rng = np.random.default_rng(seed)
    c, m = num_classes, masks
    ch, g = 4 + c + m, size // 4
    n = g * g
    inits = [
        numpy_helper.from_array(rng.normal(0, 1.0, (ch, 3, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, ch).astype(np.float32), "bias"),
        numpy_helper.from_array(rng.normal(0, 0.5, (m, 3, 4, 4)).astype(np.float32), "w_proto"),
        numpy_helper.from_array(np.array([0, ch, n], np.int64), "shape"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
        numpy_helper.from_array(np.array([4 + c], np.int64), "s4c"),
        numpy_helper.from_array(np.array([ch], np.int64), "sch"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.full((1, 1, 1), float(size), np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("MaxPool", ["images"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "w", "bias"], ["feat"]),
        helper.make_node("Reshape", ["feat", "shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "s0", "s4", "ax1"], ["box_logits"]),
        helper.make_node("Slice", ["flat", "s4", "s4c", "ax1"], ["cls_logits"]),
        helper.make_node("Slice", ["flat", "s4c", "sch", "ax1"], ["coeffs"]),
        helper.make_node("Sigmoid", ["box_logits"], ["box_unit"]),
        helper.make_node("Mul", ["box_unit", "scale"], ["boxes_px"]),
        helper.make_node("Sigmoid", ["cls_logits"], ["cls_prob"]),
        helper.make_node("Conv", ["images", "w_proto"], ["output1"], kernel_shape=[4, 4], strides=[4, 4]),
    ] + _head_concat("boxes_px", "cls_prob", "coeffs", concat)
    graph = helper.make_graph(
        nodes, "seg", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, ch, n]),
         helper.make_tensor_value_info("output1", TensorProto.FLOAT, [batch, m, g, g])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="detcal-tests")
    model.ir_version = 8
    props = {"names": str({i: f"c{i}" for i in range(c)}), "imgsz": f"[{size}, {size}]", "stride": "32"}
    if task_metadata:
        props["task"] = "segment"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def seg_blob_detector(path: str | Path, *, num_classes: int = 2, masks: int = 32, concat: str = "nested",
                      size: int = 128, seed: int = 0) -> Path:
    """The blob detector (tests/synthetic.py, xywh_cls) turned into a seg model: coefficients = a
    random 1x1 Conv of each window's mean colour [B, M, N], prototypes = a 4x4 stride-4 Conv of the image."""
    rng = np.random.default_rng(seed)
    tmp = Path(path).with_suffix(".det.onnx")
    make_blob_detector(tmp, size=size, num_classes=num_classes, layout="xywh_cls")
    model = onnx.load(str(tmp))
    tmp.unlink()
    g = model.graph
    n = g.output[0].type.tensor_type.shape.dim[2].dim_value
    head = next(i for i, nd in enumerate(g.node) if nd.output[0] == "output0")
    del g.node[head]
    g.initializer.extend([
        numpy_helper.from_array(rng.normal(0, 2.0, (masks, 3, 1, 1)).astype(np.float32), "w_coeff"),
        numpy_helper.from_array(rng.normal(0, 0.5, (masks, 3, 4, 4)).astype(np.float32), "w_proto"),
        numpy_helper.from_array(np.array([0, masks, n], np.int64), "coeff_shape"),
    ])
    g.node.extend([
        helper.make_node("Conv", ["pooled", "w_coeff"], ["coeff_map"]),
        helper.make_node("Reshape", ["coeff_map", "coeff_shape"], ["coeffs"]),
        helper.make_node("Conv", ["images", "w_proto"], ["output1"], kernel_shape=[4, 4], strides=[4, 4]),
    ] + _head_concat("boxes_b", "cls_scores", "coeffs", concat))
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + num_classes + masks, n]),
                     helper.make_tensor_value_info("output1", TensorProto.FLOAT,
                                                   ["batch", masks, size // 4, size // 4])])
    model.metadata_props.add(key="task", value="segment")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return Path(path)
