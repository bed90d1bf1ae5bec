"""Build `calib.artifact.Artifact` objects in code, for the patch tests and the benchmark."""
from __future__ import annotations

import numpy as np

from calib.artifact import Artifact
from calib.artifact import AffineLogitMap, BoxPlattMap, IsotonicMap, identity_map
from calib.artifact import PostprocessConfig
from calib.artifact import Preprocess

CALIBRATORS = ("identity", "temperature", "platt_per_class", "isotonic_per_class", "platt_box")


def make_calibration(kind: str, num_classes: int, rng: np.random.Generator | None = None, knots: int = 8):
    """A plausible fitted map of `kind` for `num_classes` classes (random but monotone)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if kind == "identity":
        return identity_map(num_classes)
    if kind == "temperature":
        t = float(rng.uniform(0.6, 2.0))
        return AffineLogitMap("temperature", np.full(num_classes, 1 / t), np.zeros(num_classes))
    if kind == "temperature_per_class":
        return AffineLogitMap(kind, 1 / rng.uniform(0.6, 2.0, num_classes), np.zeros(num_classes))
    if kind == "platt_per_class":
        return AffineLogitMap(kind, rng.uniform(0.5, 2.0, num_classes), rng.uniform(-1.5, 1.0, num_classes))
    if kind == "platt_box":          # box-aware; features of boxes in a 640 x 640 input
        w = rng.normal(0, 0.5, (num_classes, 3)) if num_classes > 1 and rng.random() < 0.5 else \
            np.tile(rng.normal(0, 0.5, 3), (num_classes, 1))
        return BoxPlattMap(rng.uniform(0.5, 2.0, num_classes), rng.uniform(-1.5, 1.0, num_classes), w,
                           [-4.0, 0.0, 0.4], [2.0, 0.7, 0.25], 4.0, (640, 640))
    if kind == "isotonic_per_class":
        xs, ys = [], []
        for _ in range(num_classes):
            k = int(rng.integers(1, knots + 1))
            x = np.sort(rng.choice(np.linspace(0.0, 1.0, 257), size=k, replace=False))
            y = np.sort(rng.uniform(0, 1, k))
            if k > 2:  # a flat stretch, as isotonic fits have
                y[1] = y[0]
            xs.append(x)
            ys.append(y)
        return IsotonicMap(xs, ys)
    raise ValueError(kind)


def make_artifact(
    num_classes: int = 80, *, calibrator="platt_per_class", thresholds=0.25, layout: str = "xywh_cls",
    sha256: str = "", input_size=(640, 640), seed: int = 0, **nms,
) -> Artifact:
    """An Artifact as `detcal fit` would write it. `calibrator`: a kind name or a CalibrationMap."""
    rng = np.random.default_rng(seed)
    cmap = make_calibration(calibrator, num_classes, rng) if isinstance(calibrator, str) else calibrator
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (num_classes,))
    return Artifact(
        model={"sha256": sha256, "input_name": "images", "input_size": list(input_size), "layout": layout,
               "num_classes": num_classes, "class_names": [str(i) for i in range(num_classes)]},
        preprocess=Preprocess(),
        calibration=cmap,
        thresholds={"score": [float(t) for t in thr], "max_negative_rate": 0.01},
        nms=PostprocessConfig(**nms),
    )


def near_identity_platt(num_classes: int, seed: int = 0) -> AffineLogitMap:
    """Per-class Platt close to identity (a ~ 1, b ~ 0), as fits on a decent detector look."""
    rng = np.random.default_rng(seed)
    return AffineLogitMap("platt_per_class", rng.uniform(0.9, 1.1, num_classes), rng.uniform(-0.2, 0.2, num_classes))


# ------------------------------------------------------------------------------------------
# raw head outputs, synthetic detector graphs and output comparison (patch tests, benchmark)
# ------------------------------------------------------------------------------------------
def random_head(layout: str, batch: int, n: int, num_classes: int, rng: np.random.Generator, *,
                grid: bool = False, input_size=(640, 640), dup_frac: float = 0.0) -> np.ndarray:
    """A raw head output of `layout` with boxes spread over (and beyond) the input.

    grid: scores and boxes on a coarse grid, so that exact ties (scores and boxes) occur.
    dup_frac: fraction of candidates that copy another candidate's box (identical boxes).
    """
    h, w = input_size
    cx = rng.uniform(-0.1 * w, 1.1 * w, (batch, n))
    cy = rng.uniform(-0.1 * h, 1.1 * h, (batch, n))
    bw = rng.uniform(0, 0.5 * w, (batch, n))
    bh = rng.uniform(0, 0.5 * h, (batch, n))
    scores = rng.beta(0.6, 2.5, (batch, n, num_classes))
    if grid:
        cx, cy, bw, bh = (np.round(v / 16) * 16 for v in (cx, cy, bw, bh))
        scores = np.round(scores * 64) / 64
    if dup_frac and n > 1:
        k = max(1, int(dup_frac * n))
        src, dst = rng.integers(0, n, k), rng.integers(0, n, k)
        for arr in (cx, cy, bw, bh):
            arr[:, dst] = arr[:, src]
    boxes = np.stack([cx, cy, bw, bh], axis=-1)                       # (B, N, 4) cxcywh
    if layout == "xywh_cls":
        return np.concatenate([boxes, scores], axis=2).transpose(0, 2, 1).astype(np.float32)
    if layout == "xywh_obj_cls":
        obj = rng.uniform(0, 1, (batch, n, 1))
        if grid:
            obj = np.round(obj * 8) / 8
        return np.concatenate([boxes, obj, scores], axis=2).astype(np.float32)
    if layout == "end2end":
        xyxy = np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)
        cls = rng.integers(0, num_classes, (batch, n, 1)).astype(np.float64)
        return np.concatenate([xyxy, scores[..., :1], cls], axis=2).astype(np.float32)
    raise ValueError(layout)


def assert_same_detections(got: dict, ref: dict, *, box_tol: float = 1e-3, score_tol: float = 1e-5, context: str = "",
                           ties_unordered: bool = False):
    """The patched model's outputs equal pack_fixed(postprocess(...)): same count, classes equal,
    boxes within box_tol px, scores within score_tol, padding rows zero with class -1.

    ties_unordered: detections whose scores are within score_tol of each other may come in
    either order (for whole models where the graph calibrates the exact logits and the reference
    the float32-rounded probabilities: equal probabilities, different logits).
    """
    np.testing.assert_array_equal(got["num_dets"], ref["num_dets"], err_msg=f"num_dets {context}")
    assert got["num_dets"].dtype == np.int32 and got["det_classes"].dtype == np.int32
    assert got["det_boxes"].dtype == np.float32 and got["det_scores"].dtype == np.float32
    if ties_unordered:
        for b in range(ref["num_dets"].shape[0]):
            n = int(ref["num_dets"][b, 0])
            used = np.zeros(n, bool)
            for i in range(n):
                ok = (~used & (got["det_classes"][b, :n] == ref["det_classes"][b, i])
                      & (np.abs(got["det_scores"][b, :n] - ref["det_scores"][b, i]) <= score_tol)
                      & np.all(np.abs(got["det_boxes"][b, :n] - ref["det_boxes"][b, i]) <= box_tol, axis=1))
                assert ok.any(), f"{context}: image {b} detection {i} of the reference has no match"
                used[int(np.argmax(ok))] = True
            assert np.all(got["det_classes"][b, n:] == -1) and not got["det_scores"][b, n:].any()
            assert np.all(np.diff(got["det_scores"][b, :n]) <= 0), "scores not sorted"
        return
    np.testing.assert_array_equal(got["det_classes"], ref["det_classes"], err_msg=f"classes {context}")
    np.testing.assert_allclose(got["det_boxes"], ref["det_boxes"], rtol=0, atol=box_tol, err_msg=f"boxes {context}")
    np.testing.assert_allclose(got["det_scores"], ref["det_scores"], rtol=0, atol=score_tol, err_msg=f"scores {context}")


def synthetic_detector(layout: str = "xywh_cls", *, num_classes: int = 3, opset: int = 13, fp16: bool = False,
                       sigmoid_front: bool = True, size: int = 32, batch="batch", seed: int = 0):
    """A tiny detector graph with a real head topology: images [B,3,H,W] -> 1x1 Conv -> [B, 4+C, N].

    xywh_cls: Concat(boxes * stride, Sigmoid(logits)) (Ultralytics) when sigmoid_front, else
    Sigmoid over all channels then boxes rescaled; xywh_obj_cls: Transpose to [B, N, 5+C].
    Only ops whose form is the same from opset 10 to 18 (Slice with inputs, Conv, Concat...).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dt = np.float16 if fp16 else np.float32
    et = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    ch = 4 + num_classes + (1 if layout == "xywh_obj_cls" else 0)
    n = (size // 4) ** 2
    inits = [
        numpy_helper.from_array((rng.normal(0, 1.0, (ch, 3, 1, 1))).astype(dt), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, ch).astype(dt), "bias"),
        numpy_helper.from_array(np.array([0, ch, n], np.int64), "shape"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([4], np.int64), "s4"),
        numpy_helper.from_array(np.array([ch], np.int64), "sch"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([float(size)], dt).reshape(1, 1, 1), "stride"),
    ]
    nodes = [
        helper.make_node("MaxPool", ["images"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "w", "bias"], ["feat"]),
        helper.make_node("Reshape", ["feat", "shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "s0", "s4", "ax1"], ["box_logits"]),
        helper.make_node("Slice", ["flat", "s4", "sch", "ax1"], ["cls_logits"]),
        helper.make_node("Sigmoid", ["box_logits"], ["box_unit"]),
        helper.make_node("Mul", ["box_unit", "stride"], ["boxes_px"]),
    ]
    if layout == "xywh_cls" and sigmoid_front:
        nodes += [helper.make_node("Sigmoid", ["cls_logits"], ["cls_prob"]),
                  helper.make_node("Concat", ["boxes_px", "cls_prob"], ["output0"], axis=1)]
        out_shape = [batch, ch, n]
    else:
        nodes += [helper.make_node("Sigmoid", ["cls_logits"], ["cls_prob"]),
                  helper.make_node("Concat", ["boxes_px", "cls_prob"], ["cat"], axis=1),
                  helper.make_node("Identity" if layout == "xywh_cls" else "Transpose", ["cat"], ["output0"],
                                   **({} if layout == "xywh_cls" else {"perm": [0, 2, 1]}))]
        out_shape = [batch, ch, n] if layout == "xywh_cls" else [batch, n, ch]
    graph = helper.make_graph(nodes, "synthetic", [helper.make_tensor_value_info("images", et, [batch, 3, size, size])],
                              [helper.make_tensor_value_info("output0", et, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="detcal-tests")
    model.ir_version = 7
    names = {i: str(i) for i in range(num_classes)}
    model.metadata_props.add(key="names", value=str(names))
    onnx.checker.check_model(model, full_check=True)
    return model


def near_identity_isotonic(num_classes: int, seed: int = 0, knots: int = 24) -> IsotonicMap:
    """Per-class isotonic tables close to identity, flat near 0 (as fits on a decent detector look)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(num_classes):
        x = np.linspace(0.0, 1.0, knots)
        y = np.clip(x ** rng.uniform(0.9, 1.3) + rng.normal(0, 0.01, knots), 0, 1)
        y = np.maximum.accumulate(y)
        y[0] = 0.0
        xs.append(x)
        ys.append(y)
    return IsotonicMap(xs, ys)
