"""Graph twins of the box-aware calibration (calib.artifact.box_features, calib.artifact.box_map), node for node.

    numpy (calib)                                   graph (this module)
    box_features.log_f32(x)                         log_f32              (Clip, GreaterOrEqual/Less,
                                                                          Where, Mul, Add, Sub, Div)
    box_features.box_features_f32(boxes, size)      box_feature_terms    (Gather, Sub, Max, Mul, Div, Sqrt),
                                                    then its two logs
    BoxPlattMap.standardised_features               standardised_features (Sub, Div, Clip)
    box_map.logit_f32(p)                            odds_f32, then its log
                                                    (the three logs in one: log_f32_stacked)
    BoxPlattMap.calibrated_logit                    box_calibrated_logit (a, b, w gathered by class)
    BoxPlattMap.survives                            box_survives         (p > pre_c and s > L_c)
    box_pipeline.threshold_calibrate_box            threshold_calibrate_box (box_survivors_key_dense:
                                                    Greater, NonZero, GatherND, ..., ScatterND; or
                                                    box_survivors_key_sparse for end2end heads)
    box_pipeline.box_scores                         box_calibrated_score (Sigmoid, on the kept ones)

Every operation but the final Sigmoid is exactly rounded in IEEE float32 and runs in the order
of the numpy twin, so the calibrated logit, the survivors and the ranking by logit are the same
bits as the reference's; the calibrated score differs by at most an ulp or so (exp kernels).
Tensors: M candidates; p [M] raw scores, cls [M] int64 in [0, C), boxes [M, 4] xyxy input px.
Every name starts with `detcal/` (the GraphBuilder prefixes it).
"""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from calib.artifact.box_features import (
    ATANH_COEFFS,
    LN2,
    LOG_MAX,
    LOG_MIN,
    MIN_SIDE,
    RANGE_STEPS,
    SQRT2,
    SQRT_HALF,
    feature_constants,
)
from calib.artifact import EPS, BoxPlattMap

from .graph_builder import NEG, GraphBuilder
from .graph_calibration import class_shape
from .graph_types import Sparse

F = np.float32


def _scale_step(b: GraphBuilder, m: str, e: str, cond: str, factor: float, de: float, tag: str) -> tuple[str, str]:
    """m * Where(cond, factor, 1), e + Where(cond, de, 0): one exact range-reduction step."""
    mul = b.op("Where", cond, b.f32(f"{tag}_f", factor), b.f32(f"{tag}_one", 1.0), name=f"{tag}_factor")
    m = b.op("Mul", m, mul, name=f"{tag}_m")
    inc = b.op("Where", cond, b.f32(f"{tag}_de", de), b.f32(f"{tag}_zero", 0.0), name=f"{tag}_inc")
    return m, b.op("Add", e, inc, name=f"{tag}_e")


def log_f32(b: GraphBuilder, x: str, tag: str = "boxcal/log") -> str:
    """x [...] float32 > 0 -> log(x) [...] with exactly-rounded ops only (calib.artifact.box_features.log_f32)."""
    m = b.op("Clip", x, b.f32(f"{tag}/lo", LOG_MIN), b.f32(f"{tag}/hi", LOG_MAX), name=f"{tag}/clamp")
    e = b.op("Mul", m, b.f32(f"{tag}/zero", 0.0), name=f"{tag}/e0")          # zeros of x's shape
    for k in RANGE_STEPS:
        up, down = b.f32(f"{tag}/up{k}", 2.0 ** k), b.f32(f"{tag}/down{k}", 2.0 ** -k)
        m, e = _scale_step(b, m, e, b.ge(m, up, name=f"{tag}/big{k}"), 2.0 ** -k, float(k), f"{tag}/hi{k}")
        m, e = _scale_step(b, m, e, b.op("Less", m, down, name=f"{tag}/small{k}"), 2.0 ** k, -float(k), f"{tag}/lo{k}")
    m, e = _scale_step(b, m, e, b.ge(m, b.f32(f"{tag}/sqrt2", SQRT2), name=f"{tag}/big_s"), 0.5, 1.0, f"{tag}/hi_s")
    m, e = _scale_step(b, m, e, b.op("Less", m, b.f32(f"{tag}/sqrt_half", SQRT_HALF), name=f"{tag}/small_s"),
                       2.0, -1.0, f"{tag}/lo_s")
    one = b.f32(f"{tag}/one", 1.0)
    f = b.op("Div", b.op("Sub", m, one, name=f"{tag}/m_minus_1"), b.op("Add", m, one, name=f"{tag}/m_plus_1"),
             name=f"{tag}/f")
    f2 = b.op("Mul", f, f, name=f"{tag}/f2")
    s = b.op("Add", b.op("Mul", f2, b.f32(f"{tag}/c0", ATANH_COEFFS[0]), name=f"{tag}/h0"),
             b.f32(f"{tag}/c1", ATANH_COEFFS[1]), name=f"{tag}/s1")
    for i, c in enumerate(ATANH_COEFFS[2:], start=2):
        s = b.op("Add", b.op("Mul", s, f2, name=f"{tag}/h{i}"), b.f32(f"{tag}/c{i}", c), name=f"{tag}/s{i}")
    log_m = b.op("Mul", b.op("Mul", b.f32(f"{tag}/two", 2.0), f, name=f"{tag}/two_f"), s, name=f"{tag}/log_m")
    return b.op("Add", b.op("Mul", e, b.f32(f"{tag}/ln2", LN2), name=f"{tag}/e_ln2"), log_m, name=f"{tag}/log")


def log_f32_stacked(b: GraphBuilder, xs: list[str], tag: str) -> list[str]:
    """log_f32 of several tensors of one shape [...] in ONE log_f32 (~90 nodes) over their stack [n, ...]:
    log_f32 is elementwise, so every value is the same bits as its own log_f32 (Unsqueeze, Concat,
    Split, Squeeze around it)."""
    stacked = b.op("Concat", *[b.unsqueeze(x, [0], name=f"{tag}/in{i}") for i, x in enumerate(xs)], name=f"{tag}/stack",
                   axis=0)
    logs = b.split(log_f32(b, stacked, tag), [1] * len(xs), 0, name=f"{tag}/unstack")
    return [b.squeeze(v, [0], name=f"{tag}/out{i}") for i, v in enumerate(logs)]


def box_feature_terms(b: GraphBuilder, boxes: str, input_size) -> tuple[str, str, str]:
    """boxes [..., 4] xyxy input px -> (relative area, aspect w / h, centre_distance), each [...] float32:
    box_features_f32 before its two logs (box_calibrated_logit takes them with the score's in one log_f32)."""
    inv_area, half_w, half_h = feature_constants(input_size)

    def col(i, name):
        return b.op("Gather", boxes, b.i64(f"boxcal/col{i}", i), name=f"boxcal/{name}", axis=-1)

    x1, y1, x2, y2 = col(0, "x1"), col(1, "y1"), col(2, "x2"), col(3, "y2")
    min_side = b.f32("boxcal/min_side", MIN_SIDE)
    bw = b.op("Max", b.op("Sub", x2, x1, name="boxcal/w_raw"), min_side, name="boxcal/w")
    bh = b.op("Max", b.op("Sub", y2, y1, name="boxcal/h_raw"), min_side, name="boxcal/h")
    area = b.op("Mul", b.op("Mul", bw, bh, name="boxcal/area"), b.f32("boxcal/inv_input_area", inv_area),
                name="boxcal/rel_area")
    aspect = b.op("Div", bw, bh, name="boxcal/aspect")
    half = b.f32("boxcal/half", 0.5)
    hw, hh = b.f32("boxcal/half_w", half_w), b.f32("boxcal/half_h", half_h)
    cx = b.op("Mul", b.op("Add", x1, x2, name="boxcal/x_sum"), half, name="boxcal/cx")
    cy = b.op("Mul", b.op("Add", y1, y2, name="boxcal/y_sum"), half, name="boxcal/cy")
    dx = b.op("Div", b.op("Sub", cx, hw, name="boxcal/cx_off"), hw, name="boxcal/dx")
    dy = b.op("Div", b.op("Sub", cy, hh, name="boxcal/cy_off"), hh, name="boxcal/dy")
    r2 = b.op("Add", b.op("Mul", dx, dx, name="boxcal/dx2"), b.op("Mul", dy, dy, name="boxcal/dy2"), name="boxcal/r2")
    dist = b.op("Sqrt", b.op("Mul", r2, half, name="boxcal/r2_half"), name="boxcal/centre_distance")
    return area, aspect, dist


def standardised_features(b: GraphBuilder, phi: tuple[str, str, str], cmap: BoxPlattMap) -> list[str]:
    """(phi_0, phi_1, phi_2) -> u_j = Clip((phi_j - mean_j) / std_j, -clip, clip), float32."""
    lo, hi = b.f32("boxcal/u_lo", -cmap.clip), b.f32("boxcal/u_hi", cmap.clip)
    out = []
    for j, p in enumerate(phi):
        c = b.op("Sub", p, b.f32(f"boxcal/mean{j}", cmap.mean[j]), name=f"boxcal/centred{j}")
        out.append(b.op("Clip", b.op("Div", c, b.f32(f"boxcal/std{j}", cmap.std[j]), name=f"boxcal/scaled{j}"),
                        lo, hi, name=f"boxcal/u{j}"))
    return out


def odds_f32(b: GraphBuilder, p: str) -> str:
    """p [...] -> pc / (1 - pc), pc = Clip(p, EPS, 1 - EPS): calib.artifact.box_map.logit_f32 before its log."""
    pc = b.op("Clip", p, b.f32("boxcal/eps_lo", EPS), b.f32("boxcal/eps_hi", 1 - EPS), name="boxcal/clip_p")
    return b.op("Div", pc, b.op("Sub", b.f32("boxcal/one", 1.0), pc, name="boxcal/one_minus_p"), name="boxcal/odds")


def _per_class(b: GraphBuilder, tag: str, values: np.ndarray, cls: str) -> str:
    """A per-class constant gathered by cls [M], or one scalar when every class has the same value."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values[0]):
        return b.f32(f"boxcal/{tag}", values[0])
    return b.op("Gather", b.f32(f"boxcal/{tag}_table", values), cls, name=f"boxcal/{tag}_of_class", axis=0)


def box_calibrated_logit(b: GraphBuilder, p: str, cls: str, boxes: str, cmap: BoxPlattMap, input_size) -> str:
    """p [M], cls [M] int64, boxes [M, 4] xyxy input px -> s [M] float32,
    s = (a_c z + b_c) + ((w_c0 u_0 + w_c1 u_1) + w_c2 u_2) as BoxPlattMap.calibrated_logit.
    The three logs (the score's logit, log area, log aspect) are one log_f32 over their stack."""
    area, aspect, dist = box_feature_terms(b, boxes, input_size)
    z, log_area, log_aspect = log_f32_stacked(b, [odds_f32(b, p), area, aspect], "boxcal/logs")
    u = standardised_features(b, (log_area, log_aspect, dist), cmap)
    terms = [b.op("Mul", _per_class(b, f"w{j}", cmap.w[:, j], cls), u[j], name=f"boxcal/wu{j}") for j in range(3)]
    box_term = b.op("Add", b.op("Add", terms[0], terms[1], name="boxcal/wu01"), terms[2], name="boxcal/box_term")
    az = b.op("Mul", _per_class(b, "a", cmap.a, cls), z, name="boxcal/az")
    score_term = b.op("Add", az, _per_class(b, "b", cmap.b, cls), name="boxcal/az_b")
    return b.op("Add", score_term, box_term, name="boxcal/logit_calibrated")


def box_survives(b: GraphBuilder, p: str, cls: str, s: str, cmap: BoxPlattMap, thresholds) -> str:
    """p [M], cls [M], s [M] -> [M] bool: p > pre_c and s > L_c (BoxPlattMap.survives)."""
    pre = cmap.prefilter_thresholds(thresholds)
    lt = cmap.logit_thresholds(thresholds)

    def table(tag, v):
        if np.all(v == v[0]):
            return b.f32(f"boxcal/{tag}", v[0])
        return b.op("Gather", b.f32(f"boxcal/{tag}_table", v), cls, name=f"boxcal/{tag}_of_class", axis=0)

    above_pre = b.op("Greater", p, table("prefilter", pre), name="boxcal/above_prefilter")
    above = b.op("Greater", s, table("logit_threshold", lt), name="boxcal/above_threshold")
    return b.op("And", above_pre, above, name="boxcal/survives")


def box_calibrated_score(b: GraphBuilder, s: str) -> str:
    """s [...] calibrated logit -> sigmoid(s) [...], the calibrated score."""
    return b.op("Sigmoid", s, name="boxcal/score")


# ------------------------------------------------------------------------------------------
# the calibrate-and-threshold step on decoded heads (calib.box_pipeline.threshold_calibrate_box)
# ------------------------------------------------------------------------------------------
def cxcywh_to_xyxy(b: GraphBuilder, boxes: str) -> str:
    """boxes [..., 4] cxcywh -> [..., 4] xyxy with calib.boxes.cxcywh_to_xyxy's float32 arithmetic."""
    centre = b.op("Gather", boxes, b.i64("boxcal/cxy", [0, 1]), name="boxcal/centre", axis=-1)
    half = b.op("Div", b.op("Gather", boxes, b.i64("boxcal/wh", [2, 3]), name="boxcal/size", axis=-1),
                b.f32("boxcal/two", 2.0), name="boxcal/half_size")
    return b.op("Concat", b.op("Sub", centre, half, name="boxcal/xy1"), b.op("Add", centre, half, name="boxcal/xy2"),
                name="boxcal/xyxy", axis=-1)


def box_survivors_key_dense(b: GraphBuilder, probs: str, boxes: str, class_axis: int, cmap: BoxPlattMap, thresholds,
                            input_size, box_format: str = "cxcywh") -> str:
    """Dense head -> key of probs' shape ([B, C, N] | [B, N, C]): the calibrated logit s where the
    candidate survives (p > pre_c and s > L_c), NEG elsewhere.

    probs [B, C, N] with boxes [B, 4, N] (class_axis 1), or probs [B, N, C] with boxes [B, N, 4]
    (class_axis 2), the boxes in `box_format` ('cxcywh', or 'xyxy' for heads decoded from distances,
    gfl_multilevel). Prefilter over N x C (Greater, NonZero), then on the M prefiltered candidates:
    GatherND of score and box, cxcywh -> xyxy where needed, box_calibrated_logit, threshold, and
    ScatterND into a NEG-filled key.
    """
    C = cmap.num_classes
    pre = cmap.prefilter_thresholds(thresholds)
    lt = cmap.logit_thresholds(thresholds)
    shape = class_shape(C, class_axis)
    cand = b.op("Greater", probs, b.f32("boxcal/prefilter", pre.reshape(shape)), name="boxcal/prefiltered")
    where = b.op("Transpose", b.op("NonZero", cand, name="boxcal/nonzero"), name="boxcal/cand_index", perm=[1, 0])
    p = b.op("GatherND", probs, where, name="boxcal/cand_score")                                     # [M]
    cls = b.op("Gather", where, b.i64("boxcal/class_col", class_axis), name="boxcal/cand_class", axis=1)
    box_col = 2 if class_axis == 1 else 1
    bidx = b.op("Gather", where, b.i64("boxcal/box_cols", [0, box_col]), name="boxcal/cand_box_index", axis=1)
    rows = b.op("Transpose", boxes, name="boxcal/boxes_bn4", perm=[0, 2, 1]) if class_axis == 1 else boxes
    cand_boxes = b.op("GatherND", rows, bidx, name="boxcal/cand_boxes")                            # [M, 4]
    xyxy = cand_boxes if box_format == "xyxy" else cxcywh_to_xyxy(b, cand_boxes)
    s = box_calibrated_logit(b, p, cls, xyxy, cmap, input_size)
    ok = b.op("Greater", s, _per_class(b, "logit_threshold", lt, cls), name="boxcal/above_threshold")
    vals = b.op("Where", ok, s, b.f32("boxcal/neg", NEG), name="boxcal/cand_key")
    fill = b.op("ConstantOfShape", b.op("Shape", probs, name="boxcal/dense_shape"), name="boxcal/neg_fill",
                value=numpy_helper.from_array(np.array([NEG], np.float32)))
    return b.op("ScatterND", fill, where, vals, name="boxcal/key")


def box_survivors_key_sparse(b: GraphBuilder, boxes: str, scores: str, classes: str, cmap: BoxPlattMap, thresholds,
                             input_size) -> tuple[str, str]:
    """end2end candidates: boxes [B, K, 4] xyxy, scores [B, K], classes [B, K] int64 -> (key [B, K]:
    calibrated logit or NEG, class [B, K] made valid); classes outside [0, C) never survive."""
    C = cmap.num_classes
    valid = b.op("And", b.ge(classes, b.i64("boxcal/cls_min", 0), name="boxcal/cls_ge0"),
                 b.op("Less", classes, b.i64("boxcal/num_classes", C), name="boxcal/cls_ltC"), name="boxcal/cls_valid")
    safe = b.op("Where", valid, classes, b.i64("boxcal/cls_zero", 0), name="boxcal/cls_safe")
    s = box_calibrated_logit(b, scores, safe, boxes, cmap, input_size)
    surv = b.op("And", valid, box_survives(b, scores, safe, s, cmap, thresholds), name="boxcal/sparse_survives")
    return b.op("Where", surv, s, b.f32("boxcal/neg", NEG), name="boxcal/key"), safe


def threshold_calibrate_box(b: GraphBuilder, decoded, cmap: BoxPlattMap, thresholds, multi_label: bool
                            ) -> tuple[str, str | None]:
    """The twin of calib.box_pipeline.threshold_calibrate_box, then select_best_class (or the
    multi-label flattening): decoded Dense or Sparse -> (key, class) as variants.candidate_key
    returns them, the key being the calibrated logit (NEG where the candidate does not survive).
    The Dense head's logits are not used: the reference sees probabilities."""
    from . import steps

    size = cmap.input_size
    if isinstance(decoded, Sparse):
        return box_survivors_key_sparse(b, decoded.boxes, decoded.scores, decoded.classes, cmap, thresholds, size)
    key = box_survivors_key_dense(b, decoded.probs, decoded.boxes, decoded.class_axis, cmap, thresholds, size,
                                  decoded.box_format)
    if multi_label:
        return steps.multi_label_candidates(b, key, decoded.class_axis), None
    return steps.select_best_class(b, key, decoded.class_axis)


__all__ = ["log_f32", "log_f32_stacked", "box_feature_terms", "standardised_features", "odds_f32", "box_calibrated_logit", "box_survives",
           "box_calibrated_score", "cxcywh_to_xyxy", "box_survivors_key_dense", "box_survivors_key_sparse",
           "threshold_calibrate_box"]
