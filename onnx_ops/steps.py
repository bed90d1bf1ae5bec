"""The inserted post-processing: one builder per step of `calib.pipeline`, same names, same order.

    numpy (calib.pipeline)                      graph (this module)
    decode(raw, layout)                         decode -> decode_dense | decode_end2end
    threshold (raw score > raw threshold)       threshold (penalty key), threshold_sparse (end2end)
    calibrate                                   calibrate (every score), calibrate_logits (Sigmoid-
                                                front heads), threshold_then_calibrate (survivors only),
                                                calibrate_sparse, calibrated_box_score
    select_best_class (unless multi_label)      select_best_class (ArgMax, GatherElements),
                                                select_best_class_uniform_identity, or
                                                multi_label_candidates (Transpose, Reshape)
    pre_nms_top_k                               pre_nms_top_k (Pad, TopK), trim_slots (Slice),
                                                gather_boxes_xyxy (GatherND / GatherElements)
    mask_letterbox                              mask_letterbox (compare on K1 candidates)
    class_aware_nms (max_det)                   class_aware_nms (class offsets, ONE NonMaxSuppression,
                                                compaction to max_det: ScatterND, TopK, GatherND;
                                                kept_by_score where the slots are in box order)
    to_original_pixels                          to_original_pixels ((box - pad) / scale, clipped)
    pack_fixed                                  pack_fixed (padding rows, int32, the output names)

Which of the threshold/calibrate/best-class builders a head gets is chosen in one place,
`onnx_ops.variants.choose_calibration_variant`. As in the reference, thresholds are tested on
raw scores (exact: every calibration map is monotone per class), so the graph may calibrate
only the survivors. The calibration arithmetic itself is in `onnx_ops.graph_calibration`.

Tensors: B batch, N candidates (anchors), C classes, K1 candidates kept before NMS (capped at a static
N), M <= K1 slots in use after trim_slots, K = max_det.
Every function takes and returns tensor names; every name starts with `detcal/`.

Non-candidates carry the key NEG (-1e30) rather than -inf: finite, so that arithmetic masks
(cal * m + (m - 1) * 1e30) stay exact and TensorRT never meets inf * 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from onnx import numpy_helper

from calib.artifact import (LAYOUTS, ORIG_H, ORIG_W, PAD_LEFT, PAD_TOP, PATCHED_OUTPUTS, SCALE_X, SCALE_Y,
                            AffineLogitMap, IsotonicMap)

from .graph_boxes import cxcywh_to_xyxy
from .graph_builder import BIG, BOOL, FLOAT, INT32, INT64, NEG, GraphBuilder, gather_rows, pad_last
from .graph_calibration import calibrate_affine, calibrate_isotonic, class_shape, logit_clipped
from .graph_types import Dense, Kept, Sparse, TopK

INT64_MAX = np.iinfo(np.int64).max
NUM_DETS, DET_BOXES, DET_SCORES, DET_CLASSES = PATCHED_OUTPUTS

# ------------------------------------------------------------------------------------------
# decode
# ------------------------------------------------------------------------------------------


def to_float32(b: GraphBuilder, x: str, elem_type: int, name: str) -> str:
    """Cast a float16/float64 tensor to float32 (no-op for float32)."""
    return x if elem_type == FLOAT else b.cast(x, FLOAT, name=name)


def decode(b: GraphBuilder, raw: str, layout: str) -> Dense | Sparse:
    """raw head output (float32) -> Dense (xywh_cls, xywh_obj_cls) or Sparse (end2end)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    return decode_end2end(b, raw) if layout == "end2end" else decode_dense(b, raw, layout)


def decode_dense(b: GraphBuilder, raw: str, layout: str, num_classes: int | None = None) -> Dense:
    """raw xywh_cls [B, 4+C, N] or xywh_obj_cls [B, N, 5+C] -> Dense (obj * cls for the latter).
    num_classes: C when known at build time (one Split instead of a Slice per part)."""
    if num_classes is not None and layout in ("xywh_cls", "xywh_obj_cls"):
        if layout == "xywh_cls":
            boxes, probs = b.split(raw, [4, num_classes], 1, name="decode/split")
            return Dense(boxes, probs, class_axis=1)
        boxes, obj, cls = b.split(raw, [4, 1, num_classes], 2, name="decode/split")
        return Dense(boxes, b.op("Mul", obj, cls, name="decode/scores"), class_axis=2)
    if layout == "xywh_cls":
        boxes = b.slice(raw, [0], [4], [1], name="decode/boxes_cxcywh")
        probs = b.slice(raw, [4], [INT64_MAX], [1], name="decode/scores")
        return Dense(boxes, probs, class_axis=1)
    if layout == "xywh_obj_cls":
        boxes = b.slice(raw, [0], [4], [2], name="decode/boxes_cxcywh")
        obj = b.slice(raw, [4], [5], [2], name="decode/objectness")
        cls = b.slice(raw, [5], [INT64_MAX], [2], name="decode/class_probs")
        return Dense(boxes, b.op("Mul", obj, cls, name="decode/scores"), class_axis=2)
    raise ValueError(f"decode_dense: layout {layout!r} is not dense")


def decode_end2end(b: GraphBuilder, raw: str) -> Sparse:
    """raw [B, K, 6] x1,y1,x2,y2,score,class -> Sparse (class rounded half-to-even, as np.rint)."""
    boxes = b.slice(raw, [0], [4], [2], name="decode/boxes_xyxy")
    scores = b.squeeze(b.slice(raw, [4], [5], [2], name="decode/score_col"), [2], name="decode/scores")
    cls_f = b.squeeze(b.slice(raw, [5], [6], [2], name="decode/class_col"), [2], name="decode/class_f")
    classes = b.cast(b.op("Round", cls_f, name="decode/class_round"), INT64, name="decode/classes")
    return Sparse(boxes, scores, classes)

# ------------------------------------------------------------------------------------------
# threshold
# ------------------------------------------------------------------------------------------


def threshold(b: GraphBuilder, probs: str, cal: str, raw_thr: np.ndarray, shape: tuple, few_boxes: bool = False) -> str:
    """Threshold (dense): key = cal where raw score > raw threshold of its class, else about NEG.

    Computed as cal - (score <= threshold) * 1e30: exact for survivors (cal - 0), -1e30 for the
    rest, and no Where over N x C (Where with a broadcast operand is ~20x slower on CPU).
    few_boxes (box_select's M slots, whose scores are never NaN: a NaN score drops its box in the
    margin): Where(score > threshold, cal, NEG), two nodes instead of four; cal - 1e30 rounds to
    NEG in float32 for every cal of magnitude < 1e22 (calibrated probabilities or logits), so the
    keys are the same."""
    if np.all(raw_thr == -np.inf):
        return cal
    thr = b.f32("thresh/raw", raw_thr.reshape(shape) if raw_thr.size > 1 else raw_thr[0])
    if few_boxes:
        return b.op("Where", b.op("Greater", probs, thr, name="thresh/passes"), cal, b.f32("thresh/neg", NEG),
                    name="thresh/key")
    dropped = b.cast(b.le(probs, thr, name="thresh/dropped"), FLOAT, name="thresh/dropped_f")
    return b.op("Sub", cal, b.op("Mul", dropped, b.f32("thresh/big", -NEG), name="thresh/penalty"), name="thresh/key")


def threshold_sparse(b: GraphBuilder, sp: Sparse, cmap, raw_thr: np.ndarray) -> tuple[str, str]:
    """Threshold + calibrate (end2end): candidates -> (key [B, K] calibrated or NEG, class [B, K]);
    classes outside [0, C) never survive."""
    C = raw_thr.size
    valid = b.op("And", b.ge(sp.classes, b.i64("thresh/cls_min", 0), name="thresh/cls_ge0"),
                 b.op("Less", sp.classes, b.i64("thresh/num_classes", C), name="thresh/cls_ltC"), name="thresh/cls_valid")
    safe = b.op("Where", valid, sp.classes, b.i64("thresh/cls_zero", 0), name="thresh/cls_safe")
    thr = b.op("Gather", b.f32("thresh/raw", raw_thr), safe, name="thresh/raw_of_class", axis=0)
    surv = b.op("And", valid, b.op("Greater", sp.scores, thr, name="thresh/above"), name="thresh/survives")
    cal = calibrate_sparse(b, sp.scores, safe, cmap)
    return b.op("Where", surv, cal, b.f32("thresh/neg", NEG), name="thresh/key"), safe

# ------------------------------------------------------------------------------------------
# calibrate (dense: constants broadcast over the class axis; sparse: gathered per candidate)
# ------------------------------------------------------------------------------------------


def calibrate(b: GraphBuilder, d: Dense, cmap, num_classes: int) -> str:
    """Dense scores -> calibrated scores, same shape ([B, C, N] or [B, N, C]), every score.

    The patch calibrates isotonic maps, and logit-affine maps on probability heads, on the
    survivors only (threshold_then_calibrate, which uses NonZero); the dense form here has no data-dependent shape (one TensorRT partition) but costs
    ~6 passes over N x C per binary-search round. With the head's logits at hand and a
    logit-affine map, see calibrate_logits."""
    shape = class_shape(num_classes, d.class_axis)
    if isinstance(cmap, IsotonicMap):
        return calibrate_isotonic(b, d.probs, cmap, shape)
    if cmap.is_identity:
        return d.probs
    z = d.logits if d.logits is not None else logit_clipped(b, d.probs)
    return calibrate_affine(b, z, cmap.a, cmap.b, shape)


def calibrate_logits(b: GraphBuilder, d: Dense, cmap: AffineLogitMap, num_classes: int) -> str:
    """Sigmoid-front heads, logit-affine maps: a_c * logits + b_c, [B, C, N] (no Sigmoid over N x C:
    the class is chosen on the calibrated logit and the Sigmoid applied per box, calibrated_box_score)."""
    return calibrate_affine(b, d.logits, cmap.a, cmap.b, class_shape(num_classes, d.class_axis), sigmoid=False)


def threshold_then_calibrate(b: GraphBuilder, probs: str, cmap, raw_thr: np.ndarray, class_axis: int) -> str:
    """Dense probabilities, isotonic or logit-affine map: threshold on the raw score first, then
    calibrate the M survivors only (calibrate_sparse: per-class constants gathered by class) and
    scatter them into a NEG-filled key of probs' shape. For logit-affine maps on probability heads
    (no Sigmoid front to cut) this replaces Clip, Sub, Div, Log, Mul, Add, Sigmoid and the
    threshold penalty over all N x C by Greater, NonZero, GatherND, ScatterND over N x C plus the
    map on M scores. NonZero has a data-dependent shape (see ep_support)."""
    C = raw_thr.size
    shape = class_shape(C, class_axis)
    surv = b.op("Greater", probs, b.f32("thresh/raw", raw_thr.reshape(shape)), name="thresh/survives")
    where = b.op("Transpose", b.op("NonZero", surv, name="thresh/nonzero"), name="thresh/survivor_index", perm=[1, 0])
    scores = b.op("GatherND", probs, where, name="thresh/survivor_score")                       # [M]
    cls = b.op("Gather", where, b.i64("thresh/class_col", class_axis), name="thresh/survivor_class", axis=1)
    cal = calibrate_sparse(b, scores, cls, cmap)
    fill = b.op("ConstantOfShape", b.op("Shape", probs, name="thresh/dense_shape"), name="thresh/neg_fill",
                value=numpy_helper.from_array(np.array([NEG], np.float32)))
    return b.op("ScatterND", fill, where, cal, name="thresh/key")


def calibrated_box_score(b: GraphBuilder, best_logit: str) -> str:
    """Best calibrated logit per box [B, N] -> calibrated score, NEG where the box has no survivor."""
    score = b.op("Sigmoid", best_logit, name="calib/box_sigmoid")
    dropped = b.cast(b.le(best_logit, b.f32("calib/neg_half", NEG / 2), name="calib/box_dropped"), FLOAT,
                     name="calib/box_dropped_f")
    return b.op("Sub", score, b.op("Mul", dropped, b.f32("calib/box_big", -NEG), name="calib/box_penalty"),
                name="calib/box_score")


def calibrate_sparse(b: GraphBuilder, s: str, cls: str, cmap) -> str:
    """Per-candidate scores [B, K] with classes [B, K] (valid indices) -> calibrated [B, K]."""
    if isinstance(cmap, IsotonicMap):
        return calibrate_isotonic(b, s, cmap, None, cls=cls)
    if cmap.is_identity:
        return s
    return calibrate_affine(b, logit_clipped(b, s), cmap.a, cmap.b, None, cls=cls)

# ------------------------------------------------------------------------------------------
# select_best_class (or every surviving (box, class) for multi_label)
# ------------------------------------------------------------------------------------------


def select_best_class(b: GraphBuilder, key: str, class_axis: int, few_boxes: bool = False) -> tuple[str, str]:
    """key [B, C, N] | [B, N, C] -> (best key [B, N], class [B, N] int64); ties: lowest class.

    few_boxes (the M surviving slots of box_select, tens of boxes): ReduceMax and ArgMax with
    keepdims=0, two nodes instead of four (the max is the value ArgMax points at: same result).

    ArgMax over all N x C, then GatherElements of the one best value per box. Measured
    alternatives (onnxruntime 1.32 CPU, 2 threads, [8, 80, 8400]): ReduceMax for the key + ArgMax
    over the K1 = 3000 selected boxes' gathered columns (GatherElements [8, 80, 3000]) costs 1.7x
    more (the gather is slower than the ArgMax it saves); TopK(k=1) over C 1.2-2x more; an
    Equal/Cast/Mul/ReduceMax lowest-class trick about the same. ArgMax stays."""
    if few_boxes:
        best = b.reduce("ReduceMax", key, [class_axis], keepdims=False, name="best/key")
        return best, b.op("ArgMax", key, name="best/class", axis=class_axis, keepdims=0)
    idx = b.op("ArgMax", key, name="best/argmax", axis=class_axis, keepdims=1)
    best = b.op("GatherElements", key, idx, name="best/key_of_class", axis=class_axis)
    return b.squeeze(best, [class_axis], name="best/key"), b.squeeze(idx, [class_axis], name="best/class")


def select_best_class_uniform_identity(b: GraphBuilder, probs: str, thr: float, class_axis: int) -> tuple[str, str]:
    """Identity calibration, one threshold for all classes: the best raw class needs no mask (if
    it does not pass, no class does) -> (score [B, N], about NEG where it does not pass; class)."""
    best, cls = select_best_class(b, probs, class_axis)
    dropped = b.cast(b.le(best, b.f32("thresh/raw", thr), name="thresh/dropped"), FLOAT, name="thresh/dropped_f")
    return b.op("Sub", best, b.op("Mul", dropped, b.f32("thresh/big", -NEG), name="thresh/penalty"), name="thresh/key"), cls


def multi_label_candidates(b: GraphBuilder, key: str, class_axis: int) -> str:
    """key [B, C, N] | [B, N, C] -> [B, N * C] in box-major order (flat index = box * C + class)."""
    if class_axis == 1:
        key = b.op("Transpose", key, name="multi/box_major", perm=[0, 2, 1])
    return b.op("Reshape", key, b.i64("multi/flat_shape", [0, -1]), name="multi/flat")

# ------------------------------------------------------------------------------------------
# pre_nms_top_k
# ------------------------------------------------------------------------------------------


def pad_key_descending(b: GraphBuilder, key: str, pad: int, batch: int | None = None, prefix: str = "topk") -> str:
    """key [B, N'] -> [B, N' + pad], the pad entries non-candidates (NEG - j * 1e26 < NEG / 2, j < pad),
    distinct and descending: onnxruntime's TopK sorts such a tail faster than `pad` equal values.
    batch: B where the model fixes it (the tail is then a constant: one Concat), else Shape, Concat,
    Expand, Concat. prefix: of the nodes' names."""
    if not pad:
        return key
    ramp = (np.float64(NEG) - np.arange(pad) * 1e26).astype(np.float32).reshape(1, -1)
    if batch is not None:
        return b.op("Concat", key, b.f32(f"{prefix}/pad_tail", np.repeat(ramp, batch, 0)), name=f"{prefix}/pad_key", axis=1)
    ramp = b.f32(f"{prefix}/pad_ramp", ramp)
    if b.opset >= 15:      # Shape's start/end: the batch size alone, then [B, pad]
        shape = b.op("Concat", b.op("Shape", key, name=f"{prefix}/batch_shape", start=0, end=1),
                     b.i64(f"{prefix}/pad_len", [pad]), name=f"{prefix}/pad_shape", axis=0)
    else:
        shape = b.op("Add", b.op("Mul", b.op("Shape", key, name=f"{prefix}/key_shape"), b.i64(f"{prefix}/batch_only", [1, 0]),
                                 name=f"{prefix}/batch_shape"), b.i64(f"{prefix}/pad_len", [0, pad]), name=f"{prefix}/pad_shape")
    tail = b.op("Expand", ramp, shape, name=f"{prefix}/pad_tail")
    return b.op("Concat", key, tail, name=f"{prefix}/pad_key", axis=1)


def pre_nms_top_k(b: GraphBuilder, key: str, n_static: int | None, pre_nms_top_k: int, max_det: int,
                  bound: str | None = None, batch: int | None = None) -> TopK:
    """key [B, N'] -> the best K1 candidates, sorted by key descending, ties by lower index.

    K1 = max(pre_nms_top_k, max_det) is a build-time constant whatever N' is; with N' static it is
    capped at N' (K1 = min(max(pre_nms_top_k, max_det), N'): every candidate is a slot, no Pad).
    When N' is dynamic the axis is first padded with K1 non-candidates.
    Positions >= pre_nms_top_k are not candidates (only matters when pre_nms_top_k < max_det),
    so exactly the reference's `[: pre_nms_top_k]` survive.

    bound: float32 [1], N' itself where the graph already holds it (boxes first: the key is [B, M],
    M = Slots.most). Then TopK returns K = min(max(M, K'), K1) slots, K' = min(max_det, K1): the key
    is padded with K' non-candidates only and TopK sorts the slots in use, not K1 (no trim_slots
    after it). K is data-dependent but at most the constant K1 through its Min, which
    `ep_support` reads as the bound TensorRT checks (dynamic K from TensorRT 8.6, K < 3840).
    batch: B where the model fixes it (pad_key_descending's tail is then a constant).
    """
    k1 = max(pre_nms_top_k, max_det)
    if bound is not None:           # K from the slots in use, at most K1 (its Min is the bound ep_support reads)
        pad = min(max_det, k1)
        at_least = b.op("Max", bound, b.f32("topk/kout", [float(pad)]), name="topk/at_least")
        k = b.cast(b.op("Min", at_least, b.f32("topk/k1_f", [float(k1)]), name="topk/k_f"), INT64, name="topk/k")
    else:
        if n_static is not None and n_static >= 1:
            k1, pad = min(k1, n_static), 0      # every candidate fits: no Pad, fewer slots downstream
        else:
            pad = k1
        k = b.i64("topk/k1", [k1])
    padded = pad_key_descending(b, key, pad, batch)
    score, index = b.op("TopK", padded, k, name="topk/topk", outputs=2, axis=-1, largest=1, sorted=1)
    valid = b.op("Greater", score, b.f32("topk/neg_half", NEG / 2), name="topk/valid")
    if pre_nms_top_k < k1:
        pos = b.const("topk/pos", np.arange(k1, dtype=np.int64).reshape(1, -1))                    # [1, K1]
        if bound is not None:       # the first K positions
            pos = b.op("Slice", pos, b.i64("topk/pos_start", [0]), k, b.i64("topk/pos_axis", [1]), name="topk/pos_k")
        valid = b.op("And", valid, b.op("Less", pos, b.i64("topk/p", pre_nms_top_k), name="topk/within_p"), name="topk/valid_p")
    return TopK(score, index, valid, k1, pad)


def trim_slots(b: GraphBuilder, tk: TopK, max_det: int) -> TopK:
    """Keep the first M = max(most valid slots of any image, min(max_det, K1)) slots.

    TopK sorts the candidates first and positions >= pre_nms_top_k are a suffix, so the valid slots
    of every image are a prefix: slicing every image to M drops only non-candidates, and the
    post-top-k work (gathers, cxcywh -> xyxy, mask, class offsets, NMS input, outputs) runs on
    M slots (typically tens to a few hundred) instead of K1 (3,000). M >= min(max_det, K1) keeps
    the output compaction (TopK of min(max_det, K1)) valid. A data-dependent Slice (ends from
    values): onnxruntime runs it on every provider; TensorRT builds it from 8.6 on as a
    data-dependent shape, as it already must around NonMaxSuppression. (Boxes first needs no trim:
    pre_nms_top_k's `bound` sizes its TopK to the slots in use.)"""
    kout = min(max_det, tk.k1)
    cnt = b.reduce("ReduceSum", b.cast(tk.valid, FLOAT, name="trim/valid_f"), [1], keepdims=True, name="trim/count")
    most = b.reduce("ReduceMax", cnt, [0], keepdims=False, name="trim/most")                      # [1]
    # most <= K1 (there are K1 slots): max(most, kout) <= K1 with kout = min(max_det, K1), no Min
    m = b.op("Max", most, b.f32("trim/kout", [float(kout)]), name="trim/m_f")
    end = b.cast(m, INT64, name="trim/m")
    zero, axis = b.i64("trim/start", [0]), b.i64("trim/axis", [1])

    def cut(x, name):
        return b.op("Slice", x, zero, end, axis, name=name)

    return TopK(cut(tk.score, "trim/score"), cut(tk.index, "trim/index"), cut(tk.valid, "trim/valid"), tk.k1, tk.pad)


def xyxy_rows(b: GraphBuilder, boxes: str, fmt: str, box_axis: int) -> str:
    """boxes [B, 4, M] (box_axis 2) | [B, M, 4] (box_axis 1) in `fmt` -> [B, M, 4] xyxy input px (the
    reference's float32 cxcywh -> xyxy), made once per boxes tensor: boxes first's slots, whose rows
    the box-aware map's features and NMS both read."""
    key = ("xyxy_rows", boxes)
    if key not in b.memo:
        rows = b.op("Transpose", boxes, name="boxes/to_n4", perm=[0, 2, 1]) if box_axis == 2 else boxes
        b.memo[key] = rows if fmt == "xyxy" else cxcywh_to_xyxy(b, rows, 2, "boxes")
    return b.memo[key]


def gather_boxes_xyxy(b: GraphBuilder, boxes: str, box_index: str | None, fmt: str, box_axis: int, pad: int) -> str:
    """Boxes of the selected candidates -> [B, K1, 4] xyxy input px.

    boxes: [B, 4, N] (box_axis 2) or [B, N, 4] (box_axis 1), `fmt` 'cxcywh' or 'xyxy'; the N axis
    is padded with `pad` zero boxes (the padded candidates of pre_nms_top_k). cxcywh -> xyxy
    with the reference's float32 arithmetic: half = w / 2, x1 = cx - half, x2 = cx + half.
    The rows are gathered with GatherND (gather_rows: its [B, K1, 1] index is shared with the
    class gather of the same candidates), after a Transpose of a [B, 4, N] source.
    box_index None: every box, in order (boxes first's slots in box order: [B, M, 4]).
    Where a box-aware map's features made the slots' xyxy_rows already: those, then the gather (a
    zero box padded is the zero box either way). Otherwise the gather first: at 640 px that is 2%
    faster for the identity graph than corners on every slot first.
    """
    corners_first = box_index is None or ("xyxy_rows", boxes) in b.memo
    if corners_first:
        rows = xyxy_rows(b, boxes, fmt, box_axis)
        if box_index is None:
            return rows
    else:
        rows = b.op("Transpose", boxes, name="boxes/to_n4", perm=[0, 2, 1]) if box_axis == 2 else boxes   # [B, N, 4]
    if pad:
        rows = b.op("Pad", rows, b.i64("boxes/pads", [0, 0, 0, 0, pad, 0]), b.f32("boxes/pad_value", 0.0),
                    name="boxes/pad", mode="constant")
    g = gather_rows(b, rows, box_index, "boxes/gather", 4)                          # [B, K1, 4]
    return g if corners_first or fmt == "xyxy" else cxcywh_to_xyxy(b, g, 2, "boxes")

# ------------------------------------------------------------------------------------------
# mask_letterbox
# ------------------------------------------------------------------------------------------


def letterbox_columns(b: GraphBuilder, rows: str, cols, name: str) -> str:
    """rows [B, 6] -> [B, 1, len(cols)] (the chosen columns, ready to broadcast over candidates);
    made once per (rows, cols): mask_letterbox and to_original_pixels share them."""
    ckey = ("rows_cols", rows, tuple(cols))
    if ckey not in b.memo:      # indices [1, len(cols)]: Gather's output is [B, 1, len(cols)] directly
        b.memo[ckey] = b.op("Gather", rows, b.i64(name + "_cols", [list(cols)]), name=name, axis=1)
    return b.memo[ckey]


def letterbox_xyxy_rows(b: GraphBuilder, rows: str) -> tuple[str, str, str]:
    """rows [B, 6] -> (pad, scale, orig size), each [B, 1, 4] in xyxy column order (x, y, x, y)."""
    return (letterbox_columns(b, rows, [PAD_LEFT, PAD_TOP, PAD_LEFT, PAD_TOP], "letterbox/pad"),
            letterbox_columns(b, rows, [SCALE_X, SCALE_Y, SCALE_X, SCALE_Y], "letterbox/scale"),
            letterbox_columns(b, rows, [ORIG_W, ORIG_H, ORIG_W, ORIG_H], "letterbox/size"))


def centre_in_content(b: GraphBuilder, boxes: str, rows: str) -> str:
    """boxes [B, K1, 4] xyxy input px, rows [B, 6] -> [B, K1] bool, centre on the content (edges in).

    On four columns (cx, cy, cx, cy) = (box + box[x2, y2, x1, y1]) / 2 against the letterbox columns
    that to_original_pixels uses too (pad, and pad + size * scale): the reference's arithmetic
    (x1 + x2 and x2 + x1 are the same float32 sum), each test twice; all four -> Cast, ReduceMin."""
    swapped = b.op("Gather", boxes, b.i64("mask/swap_cols", [2, 3, 0, 1]), name="mask/swapped", axis=2)
    centre = b.op("Div", b.op("Add", boxes, swapped, name="mask/sum"), b.f32("mask/two", 2.0), name="mask/centre")
    pad, scale, size = letterbox_xyxy_rows(b, rows)                                   # [B, 1, 4] each
    far = b.op("Add", pad, b.op("Mul", size, scale, name="mask/extent"), name="mask/right_bottom")
    inside4 = b.op("And", b.ge(centre, pad, name="mask/ge_left_top"), b.le(centre, far, name="mask/le_right_bottom"),
                   name="mask/inside4")                                                # [B, K1, 4]
    inside_f = b.reduce("ReduceMin", b.cast(inside4, FLOAT, name="mask/inside4_f"), [2], keepdims=False,
                        name="mask/inside_f")
    return b.cast(inside_f, BOOL, name="mask/inside")


def mask_letterbox(b: GraphBuilder, boxes: str, rows: str, keep: str) -> str:
    """boxes [B, K1, 4] xyxy input px, rows [B, 6], keep [B, K1] bool -> keep and centred on the content."""
    return b.op("And", keep, centre_in_content(b, boxes, rows), name="mask/keep")

# ------------------------------------------------------------------------------------------
# class_aware_nms (and max_det)
# ------------------------------------------------------------------------------------------


def keep3_of(b: GraphBuilder, keep: str) -> str:
    """keep [B, M] bool -> [B, M, 1] (made once per keep tensor)."""
    key = ("keep3", keep)
    if key not in b.memo:
        b.memo[key] = b.unsqueeze(keep, [2], name="nms/keep3")
    return b.memo[key]


def class_offset_boxes_xyxy(b: GraphBuilder, boxes: str, classes: str, keep: str, class_aware: bool) -> str:
    """boxes [B, K1, 4], classes [B, K1] int64, keep [B, K1] -> boxes - lo + class * (hi - lo + 1),
    lo/hi per image over the kept boxes' coordinates (float32, exactly as calib.nms).

    An image that keeps nothing gets lo = BIG, hi = -BIG and so rows of garbage (inf, NaN): every
    one of its scores is NEG there, below NonMaxSuppression's score threshold (nms_select), which
    drops a box before reading its coordinates, so nothing needs guarding."""
    # masked min/max: the kept boxes as they are, +/- BIG elsewhere: two Where on [B, M, 4] with the
    # condition expanded once to [B, M, 4] (a broadcast condition makes onnxruntime's Where ~4x slower)
    keep4 = b.op("Expand", keep3_of(b, keep), b.i64("nms/keep4_shape", [1, 1, 4]), name="nms/keep4")
    lo = b.reduce("ReduceMin", b.op("Where", keep4, boxes, b.f32("nms/big", BIG), name="nms/lo_in"), [1, 2], name="nms/lo")
    shifted = b.op("Sub", boxes, lo, name="nms/shifted")
    if not class_aware:
        return shifted
    hi = b.reduce("ReduceMax", b.op("Where", keep4, boxes, b.f32("nms/minus_big", -BIG), name="nms/hi_in"), [1, 2],
                  name="nms/hi")
    span = b.op("Add", b.op("Sub", hi, lo, name="nms/range"), b.f32("nms/one", 1.0), name="nms/span")
    off = b.op("Mul", b.unsqueeze(b.as_float(classes, name="nms/class_f"), [2], name="nms/class3"), span, name="nms/offset")
    return b.op("Add", shifted, off, name="nms/offset_boxes")


def nms_scores(b: GraphBuilder, scores: str, keep: str) -> str:
    """scores [B, M], keep [B, M] bool -> [B, M]: the score where kept, else NEG (below NMS's score threshold)."""
    return b.op("Where", keep, scores, b.f32("nms/neg", NEG), name="nms/scores")


def nms_select(b: GraphBuilder, boxes: str, scores: str, iou: float, max_det: int) -> str:
    """boxes [B, M, 4], scores [B, M] (nms_scores) -> One NonMaxSuppression for every image and class:
    selected [S, 3] (batch, 0, position); boxes scored NEG are never read."""
    s = b.unsqueeze(scores, [1], name="nms/scores_b1k")
    return b.op("NonMaxSuppression", boxes, s, b.i64("nms/max_out", [max_det]), b.f32("nms/iou", [iou]),
                b.f32("nms/score_min", [NEG / 2]), name="nms/nms", center_point_box=0)


def class_aware_nms(b: GraphBuilder, boxes: str, classes: str, keep: str, tk: TopK, iou: float, class_aware: bool,
                    max_det: int, in_box_order: bool = False, batch: int | None = None) -> Kept:
    """boxes [B, M, 4] xyxy input px, classes [B, M] int64, keep [B, M] bool, tk (its scores)
    -> the best max_det survivors of NMS (suppress when IoU > iou), per class when class_aware.

    The slots sorted by score (pre_nms_top_k): NMS keeps them in ascending position, so ScatterND
    writes the position at each selected (batch, position) of a [B, M, 1] filled with K1, the
    smallest TopK(min(max_det, K1)) over axis 1 compacts them (values < K1: the kept rows) and its
    [B, K', 1] indices are GatherND's row index as they are.
    in_box_order: the slots are boxes first's, in box order (patch.slots_in_box_order), and
    kept_by_score sorts the survivors (tk.pad: its tail); batch: B where the model fixes it.
    """
    nms_boxes = class_offset_boxes_xyxy(b, boxes, classes, keep, class_aware)
    scores = nms_scores(b, tk.score, keep)
    selected = nms_select(b, nms_boxes, scores, iou, max_det)
    kout = min(max_det, tk.k1)            # K1 < max_det only when a static N is smaller than max_det
    if in_box_order:
        return kept_by_score(b, selected, scores, classes, boxes, tk.pad, batch)
    keep3 = keep3_of(b, keep)                                                                        # [B, M, 1]
    fill = b.op("ConstantOfShape", b.op("Shape", keep3, name="out/m_shape"), name="out/unselected",
                value=numpy_helper.from_array(np.array([tk.k1], np.float32)))                       # K1 > any position
    where = b.op("Gather", selected, b.i64("out/bp_cols", [0, 2]), name="out/batch_pos", axis=1)   # [S, 2]
    pos = b.cast(b.op("Gather", selected, b.i64("out/pos_col", [2]), name="out/pos", axis=1), FLOAT, name="out/pos_f")
    order_key = b.op("ScatterND", fill, where, pos, name="out/order_key")                            # [B, M, 1]
    mark, pick3 = b.op("TopK", order_key, b.i64("out/k", [kout]), name="out/compact", outputs=2, axis=1, largest=0,
                       sorted=1)                                                                     # [B, K', 1]
    row_ok3 = b.op("Less", mark, b.f32("out/k1_half", np.float32(tk.k1 - 0.5)), name="out/row_ok3")
    row_ok = b.squeeze(row_ok3, [2], name="out/row_ok")
    b.memo[("row_ok3", row_ok)] = row_ok3
    pick = _pick_name(b, pick3)
    return _kept_rows(b, pick, row_ok, gather_rows(b, tk.score, pick, "out/score"), classes, boxes, kout)


def kept_by_score(b: GraphBuilder, selected: str, scores: str, classes: str, boxes: str, kout: int,
                  batch: int | None = None) -> Kept:
    """NMS's selection over the M slots in box order -> Kept in the reference's order (score
    descending, ties by lower slot, i.e. lower box index: TopK's tie rule).

    scores [B, M] (NEG where not kept), classes [B, M], boxes [B, M, 4], selected [S, 3]. The
    selected slots keep their score, every other slot sinks to about 2 NEG (score + 2 NEG: one Add,
    |score| << 1e30), below a descending tail of K' non-candidates (pad_key_descending: NEG - j 1e26 >
    1.03 NEG) that lets one TopK(K') over axis 1 sort and compact at once however small M is (M = 0
    included); its values are the kept scores (no gather), its indices pick the rows. Every row past
    the selected ones is a tail row, so the tail's padding is the final output there (Kept.padded):
    class -1, and boxes of -BIG, which to_original_pixels clips to 0 (pad >= -BIG / 2, scale > 0)."""
    where = b.op("Gather", selected, b.i64("out/bp_cols", [0, 2]), name="out/batch_pos", axis=1)   # [S, 2]
    chosen = b.op("GatherND", scores, where, name="out/selected_score")                              # [S]
    sunk = b.op("Add", scores, b.f32("out/sink", 2 * NEG), name="out/unselected")                  # [B, M]
    order_key = pad_key_descending(b, b.op("ScatterND", sunk, where, chosen, name="out/order_key"), kout, batch,
                                   prefix="out")                                                     # [B, M + K']
    score, pick = b.op("TopK", order_key, b.i64("out/k", [kout]), name="out/compact", outputs=2, axis=1, largest=1,
                       sorted=1)                                                                     # [B, K']
    row_ok = b.op("Greater", score, b.f32("out/neg_half", NEG / 2), name="out/row_ok")
    # padded as float32 (onnxruntime's CUDA Pad has no integer kernels); pack_fixed's Cast makes them int32
    classes = pad_last(b, b.as_float(classes, name="nms/class_f"), 2, kout, np.float32(-1), name="out/pad_class")
    boxes = b.op("Pad", boxes, b.i64("out/box_pads", [0, 0, 0, 0, kout, 0]), b.f32("out/box_pad_value", -BIG),
                 name="out/pad_boxes", mode="constant")                                             # [B, M + K', 4]
    return dataclasses.replace(_kept_rows(b, pick, row_ok, score, classes, boxes, kout), padded=True)


def _pick_name(b: GraphBuilder, pick3: str) -> str:
    """TopK's [B, K', 1] kept positions -> a name for gather_rows: at opset >= 12 GatherND takes that
    index as it is (gather_rows' memo; no tensor of the returned name exists), before a Squeeze."""
    if b.opset < 12:
        return b.squeeze(pick3, [2], name="out/pick")
    name = b.name("out/pick")
    b.memo[("rows_idx", name)] = pick3
    return name


def _kept_rows(b: GraphBuilder, name: str, row_ok: str, score: str, classes: str, boxes: str, kout: int) -> Kept:
    """The kept slots' classes and boxes (gather_rows by the pick `name`, _pick_name) and their count."""
    num = b.reduce("ReduceSum", b.cast(row_ok, FLOAT, name="out/row_ok_f"), [1], keepdims=True, name="out/count")
    cls = gather_rows(b, classes, name, "out/class")
    box_in = gather_rows(b, boxes, name, "out/box_input_px", 4)
    return Kept(score, cls, box_in, num, row_ok, kout, name)


# ------------------------------------------------------------------------------------------
# to_original_pixels
# ------------------------------------------------------------------------------------------


def to_original_pixels(b: GraphBuilder, boxes: str, rows: str, out: str | None = None) -> str:
    """boxes [B, K, 4] xyxy input px, rows [B, 6] -> original px, clipped to [0, w] x [0, h]
    (as calib.letterbox.input_to_original_xyxy). out: the result's tensor name (a model output)."""
    pad, scale, size = letterbox_xyxy_rows(b, rows)
    x = b.op("Div", b.op("Sub", boxes, pad, name="orig/unpad"), scale, name="orig/unscale")
    return b.op("Min", b.op("Max", x, b.f32("orig/zero", 0.0), name="orig/clip_lo"), size, name="orig/clip", out=out)

# ------------------------------------------------------------------------------------------
# pack_fixed
# ------------------------------------------------------------------------------------------


def pack_fixed(b: GraphBuilder, kept: Kept, letterbox: str, max_det: int) -> dict:
    """Kept detections (boxes [B, K', 4] input px), letterbox rows [B, 6] -> the patched model's
    outputs, by name: num_dets [B,1] int32, det_boxes [B,K,4] original px (to_original_pixels),
    det_scores [B,K], det_classes [B,K] int32, K = max_det; rows at and after num_dets zero, class -1
    (Pad from K' to K where K' < max_det). kept.padded: boxes and classes are final there already
    (kept_by_score's tail), so only the scores take a Where. kept.sort_scores: the scores' values are
    then sorted descending by one TopK (each row gets the score of its rank; box_pipeline.box_scores)."""
    num_dets = b.op("Cast", kept.num, name="out/num_dets", out=NUM_DETS, to=INT32)
    extra = max_det - kept.k

    def name_or_pad(y, rank, fill, name, out_name):
        """y: the output itself where K' = K (made with out=out_name), else padded to K rows."""
        if not extra:
            return y
        pads = [0] * (2 * rank)
        pads[rank + 1] = extra
        return b.op("Pad", y, b.i64(f"{name}_pads", pads), b.const(f"{name}_fill", fill), name=f"{name}_pad",
                    out=out_name, mode="constant")

    def last(out_name, is_last=True):           # the tensor name of a node that ends its output's chain
        return out_name if is_last and not extra else None

    row_ok = kept.row_ok
    boxes = to_original_pixels(b, kept.boxes, letterbox, out=last(DET_BOXES, kept.padded))
    if not kept.padded:
        row_ok3 = b.memo.get(("row_ok3", row_ok)) or b.unsqueeze(row_ok, [2], name="out/row_ok3")
        boxes = b.op("Where", row_ok3, boxes, b.f32("out/zero", 0.0), name="out/det_boxes", out=last(DET_BOXES))
    # classes as float32 up to the last node (onnxruntime's CUDA Pad has no integer kernels; the float
    # copy is NMS's class offset's own where it made one), then one Cast to int32
    classes = b.as_float(kept.classes, name="out/class_f")
    if not kept.padded:
        classes = b.op("Where", row_ok, classes, b.f32("out/minus_one", -1.0), name="out/det_classes")
    classes = b.op("Cast", name_or_pad(classes, 2, np.float32(-1), "out/det_classes", None), name="out/class_i32",
                   to=INT32, out=DET_CLASSES)
    scores = b.op("Where", row_ok, kept.score, b.f32("out/zero_s", 0.0), name="out/det_scores",
                  out=None if kept.sort_scores else last(DET_SCORES))
    if kept.sort_scores:        # the values ranked (the tail's zeros stay last: every kept score is >= 0)
        scores = b.op("TopK", scores, b.i64("out/score_k", [kept.k]), name="out/det_scores_sorted", outputs=2,
                      axis=1, largest=1, sorted=1, out=last(DET_SCORES))[0]
    return {
        NUM_DETS: num_dets,
        DET_BOXES: name_or_pad(boxes, 3, np.float32(0), "out/det_boxes", DET_BOXES),
        DET_SCORES: name_or_pad(scores, 2, np.float32(0), "out/det_scores", DET_SCORES),
        DET_CLASSES: classes,
    }


__all__ = [
    "Dense", "Sparse", "TopK", "Kept", "NEG", "decode", "decode_dense", "decode_end2end", "threshold", "threshold_sparse",
    "calibrate", "calibrate_logits", "threshold_then_calibrate", "calibrated_box_score", "calibrate_sparse",
    "select_best_class", "select_best_class_uniform_identity", "multi_label_candidates", "pre_nms_top_k", "trim_slots",
    "gather_rows", "xyxy_rows", "gather_boxes_xyxy", "centre_in_content", "mask_letterbox", "class_offset_boxes_xyxy", "nms_select",
    "nms_scores", "kept_by_score", "class_aware_nms", "to_original_pixels", "pack_fixed",
]
