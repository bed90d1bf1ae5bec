"""Graph twins of the box-aware calibration (calib.artifact.box_features, calib.artifact.box_map).

    numpy (calib)                                   graph (this module)
    box_features.log_f32(x)                         log_f32              (Clip, Log -> Floor: an exponent
                                                                          estimate, corrected exactly;
                                                                          Gather, Where, Mul, Add, Div)
    box_features.box_features_f32(boxes, size)      box_corners, box_feature_terms (Transpose, Split, Sub,
                                                    Max, Mul, Div, Sqrt on x and y together), then its
                                                    two logs
    box_map.logit_f32(p)                            odds_f32, then its log (the three logs: one log_f32
                                                    over their stack)
    BoxPlattMap.standardised_features /             box_calibrated_logit_row (features and per-class
    BoxPlattMap.calibrated_logit                    parameters stacked: one Sub, Div, Clip, Gather, Mul)
    BoxPlattMap.survives                            box_survives         (p > pre_c and s > L_c)
    box_pipeline.threshold_calibrate_box            threshold_calibrate_box (box_survivors_key_dense:
                                                    Greater, NonZero, GatherND, ..., ScatterND; or
                                                    box_survivors_key_sparse for end2end heads)
    box_pipeline.box_scores                         box_calibrated_score (Sigmoid, on the kept ones)

Every value but the final Sigmoid is the same IEEE float32 operation on the same operands as in
the numpy twin (the one Log only estimates an exponent, which exact steps then fix), so the
calibrated logit, the survivors and the ranking by logit are the same bits as the reference's;
the calibrated score differs by at most an ulp or so (exp kernels).
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
    SQRT2,
    SQRT_HALF,
    feature_constants,
)
from calib.artifact import EPS, BoxPlattMap

from .graph_boxes import cxcywh_corners
from .graph_builder import INT64, NEG, GraphBuilder
from .graph_calibration import class_shape
from .graph_types import Sparse

F = np.float32


# 2^-e for e = -EXP_BIAS .. EXP_BIAS, indexed by e + EXP_BIAS: covers the clamp's exponents (-60..60)
# and an estimate off by one at either end
EXP_BIAS = 61
POW2_NEG = np.array([2.0 ** -(i - EXP_BIAS) for i in range(2 * EXP_BIAS + 1)], np.float32)


def _clamp_index(b: GraphBuilder, i: str, hi: int, tag: str) -> str:
    """i [...] int64 -> min(max(i, 0), hi) (integer Min / Max: TensorRT's Clip takes floats only)."""
    i = b.max(i, b.i64(f"{tag}/idx_lo", 0), name=f"{tag}/idx_ge0")
    return b.min(i, b.i64(f"{tag}/idx_hi", hi), name=f"{tag}/idx_le_hi")


def log_f32(b: GraphBuilder, x: str, tag: str = "boxcal/log") -> str:
    """x [...] float32 > 0 -> log(x) [...], the bits of calib.artifact.box_features.log_f32.

    The exponent e of x = m * 2^e, m in [sqrt(1/2), sqrt(2)) (unique): an estimate from the runtime's
    own Log, floor(log2 x + 1/2), which any Log kernel gets within one of e; then m = x * 2^-e_est
    (Gather of an exact power of two, Mul: exact) and one exact correction step each way. So the pair,
    and everything after it, is the same bits on every runtime whatever its Log's last bits
    (~20 nodes; the binary range reduction this replaces took ~70)."""
    m = b.op("Clip", x, b.f32(f"{tag}/lo", LOG_MIN), b.f32(f"{tag}/hi", LOG_MAX), name=f"{tag}/clamp")
    log2 = b.op("Mul", b.op("Log", m, name=f"{tag}/approx"), b.f32(f"{tag}/inv_ln2", 1.0 / np.log(2.0)),
                name=f"{tag}/approx_log2")
    est = b.op("Floor", b.op("Add", log2, b.f32(f"{tag}/bias_half", EXP_BIAS + 0.5), name=f"{tag}/biased"),
               name=f"{tag}/est")                                           # e_est + EXP_BIAS, float
    # a NaN x casts to any integer: the clamp keeps the Gather in range (m stays NaN)
    idx = _clamp_index(b, b.cast(est, INT64, name=f"{tag}/est_i"), 2 * EXP_BIAS, tag)
    m = b.op("Mul", m, b.op("Gather", b.f32(f"{tag}/pow2", POW2_NEG), idx, name=f"{tag}/scale", axis=0),
             name=f"{tag}/m_est")                                           # in [sqrt(1/8), sqrt(8))
    e = b.op("Sub", est, b.f32(f"{tag}/bias", float(EXP_BIAS)), name=f"{tag}/e_est")
    big = b.ge(m, b.f32(f"{tag}/sqrt2", SQRT2), name=f"{tag}/big")
    small = b.op("Less", m, b.f32(f"{tag}/sqrt_half", SQRT_HALF), name=f"{tag}/small")
    one, zero = b.f32(f"{tag}/one", 1.0), b.f32(f"{tag}/zero", 0.0)
    factor = b.op("Where", big, b.f32(f"{tag}/half", 0.5),
                  b.op("Where", small, b.f32(f"{tag}/two_up", 2.0), one, name=f"{tag}/up"), name=f"{tag}/factor")
    step = b.op("Where", big, one, b.op("Where", small, b.f32(f"{tag}/minus_one", -1.0), zero, name=f"{tag}/down"),
                name=f"{tag}/step")
    m = b.op("Mul", m, factor, name=f"{tag}/m")
    e = b.op("Add", e, step, name=f"{tag}/e")
    f = b.op("Div", b.op("Sub", m, one, name=f"{tag}/m_minus_1"), b.op("Add", m, one, name=f"{tag}/m_plus_1"),
             name=f"{tag}/f")
    f2 = b.op("Mul", f, f, name=f"{tag}/f2")
    s = b.op("Add", b.op("Mul", f2, b.f32(f"{tag}/c0", ATANH_COEFFS[0]), name=f"{tag}/h0"),
             b.f32(f"{tag}/c1", ATANH_COEFFS[1]), name=f"{tag}/s1")
    for i, c in enumerate(ATANH_COEFFS[2:], start=2):
        s = b.op("Add", b.op("Mul", s, f2, name=f"{tag}/h{i}"), b.f32(f"{tag}/c{i}", c), name=f"{tag}/s{i}")
    log_m = b.op("Mul", b.op("Mul", b.f32(f"{tag}/two", 2.0), f, name=f"{tag}/two_f_x"), s, name=f"{tag}/log_m")
    return b.op("Add", b.op("Mul", e, b.f32(f"{tag}/ln2", LN2), name=f"{tag}/e_ln2"), log_m, name=f"{tag}/log")


def box_feature_terms(b: GraphBuilder, xy1: str, xy2: str, input_size, lead: int) -> tuple[str, str, str]:
    """Corners xy1, xy2 [2, ...] (x, y first; `lead` trailing dims), input px -> (relative area, aspect
    w / h, centre_distance), each [1, ...] float32: box_features_f32 before its two logs
    (box_calibrated_logit takes those with the score's in one log_f32). x and y go through each step
    together: the same IEEE operation on the same operands as the reference's, half the nodes."""
    inv_area, half_w, half_h = feature_constants(input_size)
    col = (2,) + (1,) * lead
    wh = b.op("Max", b.op("Sub", xy2, xy1, name="boxcal/wh_raw"), b.f32("boxcal/min_side", MIN_SIDE), name="boxcal/wh")
    bw, bh = b.split(wh, [1, 1], 0, name="boxcal/w_h")
    area = b.op("Mul", b.op("Mul", bw, bh, name="boxcal/area"), b.f32("boxcal/inv_input_area", inv_area),
                name="boxcal/rel_area")
    aspect = b.op("Div", bw, bh, name="boxcal/aspect")
    half_size = b.f32("boxcal/half_wh", np.array([half_w, half_h], np.float32).reshape(col))
    centre = b.op("Mul", b.op("Add", xy1, xy2, name="boxcal/xy_sum"), b.f32("boxcal/half", 0.5), name="boxcal/centre")
    d = b.op("Div", b.op("Sub", centre, half_size, name="boxcal/centre_off"), half_size, name="boxcal/dxy")
    dx2, dy2 = b.split(b.op("Mul", d, d, name="boxcal/dxy2"), [1, 1], 0, name="boxcal/dx2_dy2")
    r2 = b.op("Add", dx2, dy2, name="boxcal/r2")
    dist = b.op("Sqrt", b.op("Mul", r2, b.f32("boxcal/half", 0.5), name="boxcal/r2_half"), name="boxcal/centre_distance")
    return area, aspect, dist


def box_corners(b: GraphBuilder, boxes: str, lead: int, box_format: str = "xyxy") -> tuple[str, str]:
    """boxes [..., 4] (`lead` leading dims) xyxy, or cxcywh -> corners (xy1, xy2), each [2, ...],
    cxcywh -> corners by graph_boxes.cxcywh_corners (calib.boxes.cxcywh_to_xyxy's arithmetic)."""
    first = b.op("Transpose", boxes, name="boxcal/coords_first", perm=[lead] + list(range(lead)))     # [4, ...]
    if box_format == "xyxy":
        return b.split(first, [2, 2], 0, name="boxcal/coord_pairs")
    return cxcywh_corners(b, first, 0, "boxcal/corners")


def odds_f32(b: GraphBuilder, p: str) -> str:
    """p [...] -> pc / (1 - pc), pc = Clip(p, EPS, 1 - EPS): calib.artifact.box_map.logit_f32 before its log."""
    pc = b.op("Clip", p, b.f32("boxcal/eps_lo", EPS), b.f32("boxcal/eps_hi", 1 - EPS), name="boxcal/clip_p")
    return b.op("Div", pc, b.op("Sub", b.f32("boxcal/one", 1.0), pc, name="boxcal/one_minus_p"), name="boxcal/odds")


def class_table(b: GraphBuilder, tag: str, rows: np.ndarray, cls: str, lead: int) -> str:
    """rows (k, C) per-class constants -> [k, ...]: gathered by cls [...] (`lead` dims), or the one
    column [k, 1, ...] when every class has the same values."""
    rows = np.asarray(rows, np.float64)
    if np.all(rows == rows[:, :1]):
        return b.f32(f"boxcal/{tag}", rows[:, 0].reshape((-1,) + (1,) * lead))
    return b.op("Gather", b.f32(f"boxcal/{tag}_table", rows), cls, name=f"boxcal/{tag}_of_class", axis=1)


def box_calibrated_logit_row(b: GraphBuilder, p: str, cls: str, boxes: str, cmap: BoxPlattMap, input_size,
                             lead: int = 1, box_format: str = "xyxy", extra_rows=None) -> tuple[str, str | None]:
    """p [...], cls [...] int64 (`lead` dims: [M], or [B, K]), boxes [..., 4] input px (xyxy, or
    cxcywh: calib.boxes.cxcywh_to_xyxy first) -> (s [1, ...] float32, the `extra_rows` (k, C)
    per-class constants gathered by cls with the map's own: [k, ...], or None),
    s = (a_c z + b_c) + ((w_c0 u_0 + w_c1 u_1) + w_c2 u_2) as BoxPlattMap.calibrated_logit.

    Stacked along a new first axis so that each step is one node: the three logs (relative area,
    aspect, the score's odds) in one log_f32 [3, ...]; the standardisation over phi [3, ...]; the
    per-class parameters (w_c0, w_c1, w_c2, a_c, b_c) in one Gather [5, ...] and their products with
    (u_0, u_1, u_2, z) in one Mul [4, ...]; then the reference's additions in its order."""
    xy1, xy2 = box_corners(b, boxes, lead, box_format)
    area, aspect, dist = box_feature_terms(b, xy1, xy2, input_size, lead)
    odds = b.unsqueeze(odds_f32(b, p), [0], name="boxcal/odds_row")
    logs = log_f32(b, b.op("Concat", area, aspect, odds, name="boxcal/log_args", axis=0), "boxcal/logs")   # [3, ...]
    log_feats, z = b.split(logs, [2, 1], 0, name="boxcal/log_feats_z")
    phi = b.op("Concat", log_feats, dist, name="boxcal/phi", axis=0)                                    # [3, ...]
    col = (3,) + (1,) * lead
    centred = b.op("Sub", phi, b.f32("boxcal/mean", np.asarray(cmap.mean, np.float32).reshape(col)), name="boxcal/centred")
    scaled = b.op("Div", centred, b.f32("boxcal/std", np.asarray(cmap.std, np.float32).reshape(col)), name="boxcal/scaled")
    u = b.op("Clip", scaled, b.f32("boxcal/u_lo", -cmap.clip), b.f32("boxcal/u_hi", cmap.clip), name="boxcal/u")
    rows = [np.asarray(cmap.w, np.float64).T, np.asarray(cmap.a)[None], np.asarray(cmap.b)[None]]
    extra = [] if extra_rows is None else [np.asarray(extra_rows, np.float64).reshape(-1, cmap.num_classes)]
    params = class_table(b, "params", np.vstack(rows + extra), cls, lead)                              # [5 + k, ...]
    k = extra[0].shape[0] if extra else 0
    parts = b.split(params, [4, 1] + ([k] if k else []), 0, name="boxcal/coef_bias")
    coef, bias = parts[0], parts[1]
    prod = b.op("Mul", coef, b.op("Concat", u, z, name="boxcal/u_z", axis=0), name="boxcal/products")        # [4, ...]
    wu0, wu1, wu2, az = b.split(prod, [1, 1, 1, 1], 0, name="boxcal/terms")
    box_term = b.op("Add", b.op("Add", wu0, wu1, name="boxcal/wu01"), wu2, name="boxcal/box_term")
    score_term = b.op("Add", az, bias, name="boxcal/az_b")
    return b.op("Add", score_term, box_term, name="boxcal/logit_row"), (parts[2] if k else None)


def box_calibrated_logit(b: GraphBuilder, p: str, cls: str, boxes: str, cmap: BoxPlattMap, input_size,
                         lead: int = 1, box_format: str = "xyxy") -> str:
    """p [...], cls [...], boxes [..., 4] -> s [...] float32: box_calibrated_logit_row's logit without
    its leading axis of 1."""
    s, _ = box_calibrated_logit_row(b, p, cls, boxes, cmap, input_size, lead, box_format)
    return b.squeeze(s, [0], name="boxcal/logit_calibrated")


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
def box_survivors_key_dense(b: GraphBuilder, probs: str, boxes: str, class_axis: int, cmap: BoxPlattMap, thresholds,
                            input_size, box_format: str = "cxcywh") -> str:
    """Dense head -> key of probs' shape ([B, C, N] | [B, N, C]): the calibrated logit s where the
    candidate survives (p > pre_c and s > L_c), NEG elsewhere.

    probs [B, C, N] with boxes [B, 4, N] (class_axis 1), or probs [B, N, C] with boxes [B, N, 4]
    (class_axis 2), the boxes in `box_format` ('cxcywh', or 'xyxy' for heads decoded from distances,
    gfl_multilevel). Prefilter over N x C (Greater, NonZero), then on the M prefiltered candidates:
    GatherND of score and box, box_calibrated_logit_row (cxcywh -> xyxy where needed; the logit
    thresholds L_c gathered with the map's parameters), threshold, and ScatterND into a NEG-filled key.
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
    s, lt_c = box_calibrated_logit_row(b, p, cls, cand_boxes, cmap, input_size, 1, box_format, extra_rows=lt)  # [1, M]
    ok = b.op("Greater", s, lt_c, name="boxcal/above_threshold")
    vals = b.squeeze(b.op("Where", ok, s, b.f32("boxcal/neg", NEG), name="boxcal/cand_key_row"), [0],
                     name="boxcal/cand_key")
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
    s = box_calibrated_logit(b, scores, safe, boxes, cmap, input_size, lead=2)
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


__all__ = ["log_f32", "box_feature_terms", "box_corners", "odds_f32", "class_table", "box_calibrated_logit_row",
           "box_calibrated_logit", "box_survives", "box_calibrated_score", "box_survivors_key_dense",
           "box_survivors_key_sparse", "threshold_calibrate_box"]
