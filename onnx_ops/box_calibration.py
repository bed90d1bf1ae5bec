"""Graph twins of the box-aware calibration (calib.artifact.box_features, calib.artifact.box_map).

    numpy (calib)                                   graph (this module)
    box_features.log_f32(x)                         log_f32              (Log -> Floor: an exponent estimate
                                                                          at most one low, corrected by one
                                                                          exact step; Mod, Gather, Where,
                                                                          Mul, Add, Div)
    box_features.box_log_terms_f32(boxes, size)     box_corners, box_feature_terms (Split, Sub,
                                                    Clip, Mul, Div, ReduceSum, Sqrt on x and y together), then its
                                                    two logs
    box_map.logit_f32(p)                            odds_f32, then its log (the three logs: one log_f32
                                                    over their stack)
    BoxPlattMap.calibrated_logit                    box_calibrated_logit_col (features and per-class
    (folded_parameters)                             parameters stacked: one Max, Min, Gather, Mul, Split)
    BoxPlattMap.survives                            box_survives         (p > pre_c and s > L_c)
    box_pipeline.threshold_calibrate_box            threshold_calibrate_box (box_survivors_key_dense:
                                                    Greater, NonZero, GatherND, ..., ScatterND; or
                                                    box_survivors_key_sparse for end2end heads; boxes
                                                    first's slots: box_select.slot_key)
    box_pipeline.box_scores                         box_calibrated_score (Sigmoid, on the kept ones, sorted)

Every value but the final Sigmoid is the same IEEE float32 operation on the same operands as in
the numpy twin (the one Log only estimates an exponent, which exact steps then fix), so the
calibrated logit, the survivors and the ranking by logit are the same bits as the reference's;
the calibrated score differs by at most an ulp or so (exp kernels).
Tensors: M candidates; p [M] raw scores, cls [M] int64 in [0, C), boxes [M, 4] xyxy input px.
Every name starts with `detcal/` (the GraphBuilder prefixes it).
"""
from __future__ import annotations

import numpy as np

from calib.artifact.box_features import (
    ATANH_COEFFS,
    LN2,
    LOG_MAX,
    LOG_MIN,
    MAX_SIDE,
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
# and an estimate one below them
EXP_BIAS = 61
POW2_NEG = np.array([2.0 ** -(i - EXP_BIAS) for i in range(2 * EXP_BIAS + 1)], np.float32)


# The exponent estimate floor(log2 x + 1/2 - ESTIMATE_SHIFT) is e or e - 1 for every Log kernel whose
# log2 is within ESTIMATE_SHIFT of the true one (float32 kernels: ~1e-6 over the clamp's range), so
# one correction step upward suffices
ESTIMATE_SHIFT = 1.0 / 16.0


def log_f32(b: GraphBuilder, x: str, tag: str = "boxcal/log", bounded: bool = False) -> str:
    """x [...] float32 > 0 -> log(x) [...], the bits of calib.artifact.box_features.log_f32.

    The exponent e of x = m * 2^e, m in [sqrt(1/2), sqrt(2)) (unique): an estimate from the runtime's
    own Log, floor(log2 x + 1/2 - 1/16), which is e or e - 1 for any Log kernel within 1/16 of log2 x;
    then m = x * 2^-e_est (Gather of an exact power of two, Mul: exact, in [sqrt(1/2), 2 sqrt(2)))
    and one exact step up where m >= sqrt(2). So the pair, and everything after it, is the same bits
    on every runtime whatever its Log's last bits (23 nodes; the binary range reduction this
    replaced took ~70). bounded: x is within the clamp [2^-60, 2^60] or NaN by construction (the
    box features' and the odds' ranges), so the clamp, a no-op there, is left out (22 nodes)."""
    m = x if bounded else b.op("Clip", x, b.f32(f"{tag}/lo", LOG_MIN), b.f32(f"{tag}/hi", LOG_MAX), name=f"{tag}/clamp")
    log2 = b.op("Mul", b.op("Log", m, name=f"{tag}/approx"), b.f32(f"{tag}/inv_ln2", 1.0 / np.log(2.0)),
                name=f"{tag}/approx_log2")
    est = b.op("Floor", b.op("Add", log2, b.f32(f"{tag}/bias_half", EXP_BIAS + 0.5 - ESTIMATE_SHIFT),
                             name=f"{tag}/biased"), name=f"{tag}/est")     # e_est + EXP_BIAS, float
    # in [0, 2 EXP_BIAS - 1] for x in the clamp's range; a NaN x casts to any integer, which Mod brings
    # into the table (m stays NaN): one integer node where a Min / Max clamp took two
    idx = b.op("Mod", b.cast(est, INT64, name=f"{tag}/est_i"), b.i64(f"{tag}/table_size", POW2_NEG.size),
               name=f"{tag}/idx")
    m = b.op("Mul", m, b.op("Gather", b.f32(f"{tag}/pow2", POW2_NEG), idx, name=f"{tag}/scale", axis=0),
             name=f"{tag}/m_est")                                           # in [sqrt(1/2), 2 sqrt(2))
    big = b.ge(m, b.f32(f"{tag}/sqrt2", SQRT2), name=f"{tag}/big")
    m = b.op("Mul", m, b.op("Where", big, b.f32(f"{tag}/half", 0.5), b.f32(f"{tag}/one_f", 1.0), name=f"{tag}/factor"),
             name=f"{tag}/m")
    # e = e_est + EXP_BIAS - EXP_BIAS (+ 1 where m was halved): integers, exact in float32
    e = b.op("Add", est, b.op("Where", big, b.f32(f"{tag}/unbias_up", 1.0 - EXP_BIAS),
                              b.f32(f"{tag}/unbias", -float(EXP_BIAS)), name=f"{tag}/step"), name=f"{tag}/e")
    one = b.f32(f"{tag}/one", 1.0)
    f = b.op("Div", b.op("Sub", m, one, name=f"{tag}/m_minus_1"), b.op("Add", m, one, name=f"{tag}/m_plus_1"),
             name=f"{tag}/f")
    f2 = b.op("Mul", f, f, name=f"{tag}/f2")
    s = b.op("Add", b.op("Mul", f2, b.f32(f"{tag}/c0", ATANH_COEFFS[0]), name=f"{tag}/h0"),
             b.f32(f"{tag}/c1", ATANH_COEFFS[1]), name=f"{tag}/s1")
    for i, c in enumerate(ATANH_COEFFS[2:], start=2):
        s = b.op("Add", b.op("Mul", s, f2, name=f"{tag}/h{i}"), b.f32(f"{tag}/c{i}", c), name=f"{tag}/s{i}")
    log_m = b.op("Mul", f, s, name=f"{tag}/log_m")
    return b.op("Add", b.op("Mul", e, b.f32(f"{tag}/ln2", LN2), name=f"{tag}/e_ln2"), log_m, name=f"{tag}/log")


def box_feature_terms(b: GraphBuilder, xy1: str, xy2: str, input_size) -> tuple[str, str, str]:
    """Corners xy1, xy2 [..., 2] (x, y last), input px -> (area w h in px^2, aspect w / h,
    centre_distance), each [..., 1] float32: box_log_terms_f32 before its two logs
    (box_calibrated_logit_col takes those with the score's in one log_f32). x and y go through each
    step together: the same IEEE operation on the same operands as the reference's, half the nodes."""
    _, scale_x, scale_y = feature_constants(input_size)
    wh = b.op("Clip", b.op("Sub", xy2, xy1, name="boxcal/wh_raw"), b.f32("boxcal/min_side", MIN_SIDE),
              b.f32("boxcal/max_side", MAX_SIDE), name="boxcal/wh")
    bw, bh = b.split(wh, [1, 1], -1, name="boxcal/w_h")
    area = b.op("Mul", bw, bh, name="boxcal/area")
    aspect = b.op("Div", bw, bh, name="boxcal/aspect")
    scale = b.f32("boxcal/centre_scale", np.array([scale_x, scale_y], np.float32))
    d = b.op("Sub", b.op("Mul", b.op("Add", xy1, xy2, name="boxcal/xy_sum"), scale, name="boxcal/xy_scaled"),
             b.f32("boxcal/centre_offset", SQRT_HALF), name="boxcal/dxy")
    # a sum of two terms is one rounding, fl(dx^2 + dy^2), in any order a reduction takes: the reference's Add
    r2 = b.reduce("ReduceSum", b.op("Mul", d, d, name="boxcal/dxy2"), [-1], keepdims=True, name="boxcal/r2")
    dist = b.op("Sqrt", r2, name="boxcal/centre_distance")
    return area, aspect, dist


def box_corners(b: GraphBuilder, boxes: str, box_format: str = "xyxy") -> tuple[str, str]:
    """boxes [..., 4] xyxy, or cxcywh -> corners (xy1, xy2), each [..., 2] (a Split of the last axis;
    cxcywh -> corners by graph_boxes.cxcywh_corners, calib.boxes.cxcywh_to_xyxy's arithmetic).
    The coordinates stay on the last axis: onnxruntime's CPU Transpose of even an [8, 4] tensor to
    coordinates-first goes to its intra-op thread pool, a worker wake-up: about 4% of the box-aware
    graph's time on the real YOLOv8n at 320 px (paired timing)."""
    if box_format == "xyxy":
        return b.split(boxes, [2, 2], -1, name="boxcal/coord_pairs")
    return cxcywh_corners(b, boxes, -1, "boxcal/corners")


def odds_f32(b: GraphBuilder, p: str) -> str:
    """p [...] -> pc / (1 - pc), pc = Clip(p, EPS, 1 - EPS): calib.artifact.box_map.logit_f32 before its log."""
    pc = b.op("Clip", p, b.f32("boxcal/eps_lo", EPS), b.f32("boxcal/eps_hi", 1 - EPS), name="boxcal/clip_p")
    return b.op("Div", pc, b.op("Sub", b.f32("boxcal/one", 1.0), pc, name="boxcal/one_minus_p"), name="boxcal/odds")


def class_table(b: GraphBuilder, tag: str, rows: np.ndarray, cls: str, cls_col: bool = False) -> str:
    """rows (k, C) per-class constants -> [..., k]: gathered by cls [...] (cls_col: cls [..., 1], by
    GatherND), or the one row (k,) when every class has the same values."""
    rows = np.asarray(rows, np.float64)
    if np.all(rows == rows[:, :1]):
        return b.f32(f"boxcal/{tag}", rows[:, 0])
    if cls_col:
        return b.op("GatherND", b.f32(f"boxcal/{tag}_table", rows.T), cls, name=f"boxcal/{tag}_of_class")
    return b.op("Gather", b.f32(f"boxcal/{tag}_table", rows.T), cls, name=f"boxcal/{tag}_of_class", axis=0)


def box_calibrated_logit_col(b: GraphBuilder, p_col: str, cls: str, boxes: str, cmap: BoxPlattMap, input_size,
                             box_format: str = "xyxy", extra_rows=None, cls_col: bool = False) -> tuple[str, str | None]:
    """p_col [..., 1] raw scores, cls [...] int64 (the leading dims: [M], or [B, K]; cls_col: cls
    [..., 1]), boxes [..., 4] input px (xyxy, or cxcywh: calib.boxes.cxcywh_to_xyxy first)
    -> (s [..., 1] float32, the `extra_rows` (k, C) per-class constants gathered by cls with the
    map's own: [..., k], or None), s = (a_c z + b'_c) + ((w'_c0 v_0 + w'_c1 v_1) + w'_c2 v_2) as
    BoxPlattMap.calibrated_logit.

    Stacked along the last axis so that each step is one node: the three logs (area, aspect, the
    score's odds) in one log_f32 [..., 3]; with the centre distance and 1 + k columns pinned to 1,
    t = (log area, log aspect, z, distance, 1, ...) [..., 5 + k], clipped to the folded bounds by one
    Max and one Min (z's bounds are -+inf); the per-class parameters (w'_c0, w'_c1, a_c, w'_c2, b'_c,
    extra) in one Gather [..., 5 + k] and their products with t in one Mul (b'_c * 1 and the extra
    rows * 1 exactly themselves), one Split; then the reference's additions in its order."""
    xy1, xy2 = box_corners(b, boxes, box_format)
    area, aspect, dist = box_feature_terms(b, xy1, xy2, input_size)
    odds = odds_f32(b, p_col)
    # within [2^-60, 2^60] (MIN_SIDE / MAX_SIDE, EPS), so log_f32 needs no clamp
    logs = log_f32(b, b.op("Concat", area, aspect, odds, name="boxcal/log_args", axis=-1), "boxcal/logs", bounded=True)
    lo, hi, w_f, b_f = cmap.folded_parameters(input_size)
    rows = [w_f.T[:2].astype(np.float64), np.asarray(cmap.a)[None], w_f.T[2:].astype(np.float64),
            b_f.astype(np.float64)[None]]
    extra = [] if extra_rows is None else [np.asarray(extra_rows, np.float64).reshape(-1, cmap.num_classes)]
    k = extra[0].shape[0] if extra else 0
    # t = (log area, log aspect, z, distance, then 1 + k columns of p that the bounds pin to exactly 1: p is in
    # [0, 1] or, outside the layouts' contract, any non-NaN value (a NaN p never passes the prefilter)), so that
    # one Mul by the gathered (w'_0, w'_1, a, w'_2, b', extra) and one Split give the terms, b' and the extra rows
    terms = b.op("Concat", logs, dist, *([p_col] * (1 + k)), name="boxcal/terms_in", axis=-1)       # [..., 5 + k]
    inf, ones = np.float32(np.inf), [1.0] * (1 + k)
    v = b.op("Min", b.op("Max", terms, b.f32("boxcal/lo", np.array([lo[0], lo[1], -inf, lo[2]] + ones, np.float32)),
                         name="boxcal/above_lo"),
             b.f32("boxcal/hi", np.array([hi[0], hi[1], inf, hi[2]] + ones, np.float32)), name="boxcal/clipped")
    params = class_table(b, "params", np.vstack(rows + extra), cls, cls_col)                          # [..., 5 + k]
    prod = b.op("Mul", params, v, name="boxcal/products")                                            # [..., 5 + k]
    parts = b.split(prod, [1, 1, 1, 1, 1] + ([k] if k else []), -1, name="boxcal/terms")
    wv0, wv1, az, wv2, bias = parts[:5]
    return logit_sum(b, wv0, wv1, wv2, az, bias, "boxcal/logit_col"), (parts[5] if k else None)


def logit_sum(b: GraphBuilder, wv0: str, wv1: str, wv2: str, az: str, bias: str, name: str) -> str:
    """The terms -> s = (a z + b') + ((w'_0 v_0 + w'_1 v_1) + w'_2 v_2), in BoxPlattMap.calibrated_logit's
    order of additions (float32 addition does not associate: this order is the bit-exact contract)."""
    box_term = b.op("Add", b.op("Add", wv0, wv1, name="boxcal/wv01"), wv2, name="boxcal/box_term")
    return b.op("Add", b.op("Add", az, bias, name="boxcal/az_b"), box_term, name=name)


def box_calibrated_logit(b: GraphBuilder, p: str, cls: str, boxes: str, cmap: BoxPlattMap, input_size,
                         lead: int = 1, box_format: str = "xyxy") -> str:
    """p [...], cls [...] (`lead` dims), boxes [..., 4] -> s [...] float32: box_calibrated_logit_col's
    logit without its trailing axis of 1."""
    p_col = b.unsqueeze(p, [lead], name="boxcal/p_col")
    s, _ = box_calibrated_logit_col(b, p_col, cls, boxes, cmap, input_size, box_format)
    return b.squeeze(s, [lead], name="boxcal/logit_calibrated")


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
    """s [...] calibrated logit -> sigmoid(s) [...], the calibrated score (the kept rows' scores:
    steps.pack_fixed then sorts them, Kept.sort_scores)."""
    return b.op("Sigmoid", s, name="boxcal/score")


# ------------------------------------------------------------------------------------------
# the calibrate-and-threshold step on decoded heads (calib.box_pipeline.threshold_calibrate_box)
# ------------------------------------------------------------------------------------------
def box_survivors_key_dense(b: GraphBuilder, probs: str, box_rows: str, class_axis: int, cmap: BoxPlattMap, thresholds,
                            input_size, box_format: str = "cxcywh") -> str:
    """Dense head -> key of probs' shape ([B, C, N] | [B, N, C]): the calibrated logit s where the
    candidate survives (p > pre_c and s > L_c), NEG elsewhere.

    probs [B, C, N] (class_axis 1) or [B, N, C] (class_axis 2), box_rows [B, N, 4] in `box_format`
    ('cxcywh', or 'xyxy': heads decoded from distances, gfl_multilevel, or boxes first's slots, whose
    xyxy rows NMS reads too). Prefilter over N x C (Greater, NonZero), then on the M prefiltered
    candidates: GatherND of score and box, box_calibrated_logit_col (cxcywh -> xyxy where needed; the
    logit thresholds L_c gathered with the map's parameters), threshold, and ScatterND into a
    NEG-filled key.
    Measured against computing every (slot, class) pair of boxes first's slots (no NonZero, GatherND
    or ScatterND; one log over [B, C + 2, M]): that was 5% slower on the real YOLOv8n at 320."""
    C = cmap.num_classes
    pre = cmap.prefilter_thresholds(thresholds)
    lt = cmap.logit_thresholds(thresholds)
    shape = class_shape(C, class_axis)
    cand = b.op("Greater", probs, b.f32("boxcal/prefilter", pre.reshape(shape)), name="boxcal/prefiltered")
    where = b.op("Transpose", b.op("NonZero", cand, name="boxcal/nonzero"), name="boxcal/cand_index", perm=[1, 0])
    where3 = b.unsqueeze(where, [1], name="boxcal/cand_index3")     # [M, 1, 3]: scores and keys as [M, 1] columns
    p = b.op("GatherND", probs, where3, name="boxcal/cand_score")                                    # [M, 1]
    if class_axis == 2:         # (batch, box, class) columns: one Split into the box's pair and the class
        bidx, cls = b.split(where, [2, 1], 1, name="boxcal/box_class")                              # [M, 2], [M, 1]
    else:
        cls = b.op("Gather", where, b.i64("boxcal/class_col", class_axis), name="boxcal/cand_class", axis=1)
        bidx = b.op("Gather", where, b.i64("boxcal/box_cols", [0, 2]), name="boxcal/cand_box_index", axis=1)
    cand_boxes = b.op("GatherND", box_rows, bidx, name="boxcal/cand_boxes")                        # [M, 4]
    s, lt_c = box_calibrated_logit_col(b, p, cls, cand_boxes, cmap, input_size, box_format, extra_rows=lt,
                                       cls_col=class_axis == 2)                                       # [M, 1]
    ok = b.op("Greater", s, lt_c, name="boxcal/above_threshold")
    neg = b.f32("boxcal/neg", NEG)
    vals = b.op("Where", ok, s, neg, name="boxcal/cand_key")                                         # [M, 1]
    fill = b.op("Where", cand, neg, neg, name="boxcal/neg_fill")       # NEG in probs' shape, one node
    return b.op("ScatterND", fill, where3, vals, name="boxcal/key")


def box_survivors_key_all_pairs(b: GraphBuilder, probs: str, box_rows: str, class_axis: int, cmap: BoxPlattMap,
                                thresholds, input_size, box_format: str = "cxcywh") -> str:
    """box_survivors_key_dense without data-dependent shapes (the fixed-shape graph, for TensorRT): the
    calibrated logit of every (box, class) pair, masked by the prefilter and the logit threshold instead
    of compacted (no NonZero, GatherND or ScatterND). -> key [B, N, C] whatever probs' orientation
    (class_axis 1: probs transposed first).

    s = (a_c z + b'_c) + ((w'_c0 v_0 + w'_c1 v_1) + w'_c2 v_2) as box_calibrated_logit_col computes it,
    but with the box's clipped features v [B, N, 1] once per box and broadcast against the per-class
    constants [1, 1, C] (the same IEEE products and sums, so the same bits where a candidate survives);
    the score's log over [B, N, C]. On CPU this costs far more than the default graph (every pair's log):
    it is for TensorRT, asked for with --static-shapes."""
    C = cmap.num_classes
    pre = cmap.prefilter_thresholds(thresholds)
    lt = cmap.logit_thresholds(thresholds)
    if class_axis == 1:
        probs = b.op("Transpose", probs, name="boxcal/probs_bnc", perm=[0, 2, 1])                  # [B, N, C]
    cand = b.op("Greater", probs, b.f32("boxcal/prefilter", pre.reshape(1, 1, C)), name="boxcal/prefiltered")
    xy1, xy2 = box_corners(b, box_rows, box_format)                                                # [B, N, 2]
    area, aspect, dist = box_feature_terms(b, xy1, xy2, input_size)                                # [B, N, 1]
    box_logs = log_f32(b, b.op("Concat", area, aspect, name="boxcal/box_log_args", axis=-1), "boxcal/box_logs",
                       bounded=True)                                                               # [B, N, 2]
    z = log_f32(b, odds_f32(b, probs), "boxcal/logs", bounded=True)                                # [B, N, C]
    lo, hi, w_f, b_f = cmap.folded_parameters(input_size)
    feats = b.op("Concat", box_logs, dist, name="boxcal/features", axis=-1)                         # [B, N, 3]
    v = b.op("Min", b.op("Max", feats, b.f32("boxcal/lo", np.asarray(lo, np.float32)), name="boxcal/above_lo"),
             b.f32("boxcal/hi", np.asarray(hi, np.float32)), name="boxcal/clipped")
    v0, v1, v2 = b.split(v, [1, 1, 1], -1, name="boxcal/feature")                                 # [B, N, 1] each

    def per_class(tag, values):
        return b.f32(f"boxcal/{tag}", np.asarray(values, np.float64).reshape(1, 1, C))

    wv = [b.op("Mul", vi, per_class(f"w{i}", w_f[:, i]), name=f"boxcal/wv{i}") for i, vi in enumerate((v0, v1, v2))]
    az = b.op("Mul", per_class("a", cmap.a), z, name="boxcal/az")
    s = logit_sum(b, *wv, az, per_class("bias", b_f), "boxcal/logit")                             # [B, N, C]
    ok = b.op("And", cand, b.op("Greater", s, per_class("logit_threshold", lt), name="boxcal/above_threshold"),
              name="boxcal/survives")
    return b.op("Where", ok, s, b.f32("boxcal/neg", NEG), name="boxcal/key")


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


def threshold_calibrate_box(b: GraphBuilder, decoded, cmap: BoxPlattMap, thresholds, multi_label: bool,
                            all_pairs: bool = False) -> tuple[str, str | None]:
    """The twin of calib.box_pipeline.threshold_calibrate_box, then select_best_class (or the
    multi-label flattening): decoded Dense or Sparse -> (key, class) as variants.candidate_key
    returns them, the key being the calibrated logit (NEG where the candidate does not survive).
    The Dense head's logits are not used: the reference sees probabilities. all_pairs: a Dense head
    without data-dependent shapes (box_survivors_key_all_pairs; Sparse heads have none anyway)."""
    from . import steps

    size = cmap.input_size
    if isinstance(decoded, Sparse):
        return box_survivors_key_sparse(b, decoded.boxes, decoded.scores, decoded.classes, cmap, thresholds, size)
    rows = decoded.boxes
    if decoded.class_axis == 1:             # [B, 4, N] -> [B, N, 4]
        rows = b.op("Transpose", rows, name="boxcal/boxes_bn4", perm=[0, 2, 1])
    if all_pairs:
        key = box_survivors_key_all_pairs(b, decoded.probs, rows, decoded.class_axis, cmap, thresholds, size,
                                          decoded.box_format)
        axis = 2                                                     # [B, N, C] whatever the head's orientation
    else:
        key = box_survivors_key_dense(b, decoded.probs, rows, decoded.class_axis, cmap, thresholds, size,
                                      decoded.box_format)
        axis = decoded.class_axis
    if multi_label:
        return steps.multi_label_candidates(b, key, axis), None
    return steps.select_best_class(b, key, axis)


__all__ = ["log_f32", "box_feature_terms", "box_corners", "odds_f32", "class_table", "box_calibrated_logit_col",
           "box_calibrated_logit", "box_survives", "box_calibrated_score", "box_survivors_key_dense",
           "box_survivors_key_all_pairs",
           "box_survivors_key_sparse", "threshold_calibrate_box"]
