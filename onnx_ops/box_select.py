"""Boxes first: the inserted graph's one read of all N x C scores, then work on the candidate boxes only.

Single-label dense heads (xywh_cls, xywh_obj_cls, and yolox_raw / gfl_multilevel / detr after their
in-graph decode). The reference (`calib.pipeline.select_candidates`) keeps a box when some class
clears its raw threshold, calibrates the surviving (box, class) pairs, picks each box's best
calibrated class (ties: lowest class) and sorts the boxes by that score (ties: lower box index).
The graph reaches the same candidates in this order:

    box_margin       alive [B, N]: a superset of the surviving boxes from ONE MatMul that reads the
                     N x C scores and writes only [B, N]: each box's class scores weighted by 1 / t_c
                     (t_c its class's raw threshold) and summed (a raw xywh_cls head [B, 4+C, N] as it
                     is, its box rows weighted 0; a cut Sigmoid front [B, C, N]; decoded probabilities
                     [B, N, C]) or, for a raw xywh_obj_cls head, (weighted sum of cls, obj) then
                     obj * sum; alive = that > 1 - 2^-8 (margin_weights; where some t_c <= 0, the plain
                     sum against the lowest threshold). Probabilities are >= 0 (the layouts' contract),
                     so the sum is >= every p_c / t_c, and the level's slack covers float32 (and TF32)
                     rounding: no survivor is lost. On the real YOLOv8n (40 COCO photos) the superset
                     holds 37.2 boxes per image against 35.5 exact with per-class thresholds 0.2..0.35;
                     with the box-aware map's raw prefilter (0.03..0.71 by class) 23.4 against 21.6,
                     where the plain sum against the lowest kept 118.5 (batch 8 box-aware: 1.9x the
                     identity graph's time before, 0.93-0.99x after).
                     Measured alternatives (batch 1 / 8, ms): Sub + ReduceMax 0.53 / 3.75 (the
                     previous margin: a full N x C write), Slice + ReduceMax 0.52 / 3.71, ReduceMax
                     over all rows 0.33 / 1.88 (wrong: the box rows), MaxPool 0.89 / 13.3, Conv 1x1
                     0.61 / 5.95, MatMul 0.095 / 1.06.
    compact          the candidate boxes' indices in ascending order, [B, M]; valid [B, M] marks the
                     filled slots (unfilled ones point at a real box and are masked). Exact for any
                     number of candidates: nothing is capped before the classes are looked at.
                     Static N (compact_boxes_topk): one TopK of alive * (L - position) over the boxes
                     cut into rows of L < 3840 (TensorRT's TopK limit; one row for N < 3840), K = the
                     most survivors of any row (bounded by L through a Min): M = rows * K.
                     Dynamic N (compact_boxes_cumsum): CumSum (float32, as TensorRT's CumSum wants) over the
                     mask gives every candidate its slot, ScatterElements (int32) writes the box
                     indices there (non-candidates to distinct slots past N), Slice keeps the first
                     M = most candidates of any image. On the real YOLOv8n (N = 8400, 3 rows) the TopK
                     rows cost 21 us against 134 us for CumSum + ScatterElements (profiler, batch 1).
    gather_slots     the slots' rows of the head (boxes, scores, and logits where the head's
                     Sigmoid front was cut) -> [B, M, 4+C] | [B, M, 5+C]: a [B, W, N] source through one
                     GatherElements over its flat view (flat_slot_index: no Transpose, nothing on
                     onnxruntime's thread pool), a [B, N, W] one by GatherND; split into boxes
                     [B, M, 4] and scores [B, M, C] (class axis 2 from here on, whatever the head's).
    slot_key         per slot and class: calibrate (steps.calibrate / steps.calibrate_logits on the
                     [B, M, C] slots), raw threshold (steps.threshold, few_boxes: Greater + Where with
                     each class's own threshold, which narrows the superset exactly), best class
                     (steps.select_best_class, few_boxes: ReduceMax + ArgMax) -> key [B, M] (NEG where
                     no class survives or the slot is unfilled: one Where), class [B, M].

The slots are in ascending box index, so the pre-NMS TopK that follows (steps.pre_nms_top_k,
ties by lower position) breaks ties by box index, as the reference does. Where a static N is at
most pre_nms_top_k (patch.slots_in_box_order) there is no pre-NMS TopK: the M slots go to NMS
in box order and steps.kept_by_score sorts the survivors, ties again by box index. No NonZero anywhere;
data-dependent shapes: M (the compaction's TopK K or Slice), and the pre-NMS TopK's
K = min(max(M, max_det), K1), which sorts the slots in use only; every data-dependent K is bounded
by a constant below 3840 (TensorRT's TopK limit) through a Min.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


from calib.artifact import AffineLogitMap, BoxPlattMap

from . import box_calibration, steps
from .ep_table import TRT_TOPK_MAX_K
from .graph_builder import FLOAT, INT32, INT64, NEG, GraphBuilder, gather_rows, pad_last
from .graph_calibration import class_shape
from .graph_types import Dense

@dataclass
class Slots:
    """The surviving boxes, compacted: box [B, M] int64 (ascending over the valid slots, every one a real
    box index), valid [B, M] bool (None where every slot is filled: one image, one row of the TopK
    compaction, M = its survivor count), most [1] float32 = M, the slot count (at least the most
    survivors of any image: steps.pre_nms_top_k sizes its TopK from it)."""

    box: str
    valid: str | None
    most: str


# Where every raw threshold t_c is at least this, the margin weighs each class by 1 / t_c (below it,
# or with a t_c <= 0, the plain sum of the class scores against the lowest threshold).
WEIGHTED_MARGIN_MIN_THRESHOLD = 1e-30
# alive = weighted sum > 1 - 2^-8: the slack absorbs float32 rounding of the products and the sum
# ((C + 2) 2^-24 relative for the C non-negative terms, any summation order) and inputs rounded to
# TF32 (2^-11 relative each, TensorRT's default for float32 MatMul on recent GPUs).
WEIGHTED_MARGIN_LEVEL = 1.0 - 2.0 ** -8


def margin_weights(raw_thr: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Per-class weights w (C,) float32 and level T of the weighted margin, or None where it does not
    apply (some t_c < WEIGHTED_MARGIN_MIN_THRESHOLD, e.g. 0 or -inf: then every box may survive).
    w_c = 1 / t_c (0 for t_c = +inf, a class nothing passes). p_c > t_c for some c implies
    sum_c w_c p_c >= w_c p_c > 1 (the other terms are >= 0), and > T once rounded to float32 (see
    WEIGHTED_MARGIN_LEVEL), so the margin stays a superset; it is tighter than the plain sum wherever the thresholds
    differ between classes (the box-aware map's raw prefilter spans 0.03..0.71 on the real YOLOv8n)."""
    t = np.asarray(raw_thr, np.float64)
    if not (t >= WEIGHTED_MARGIN_MIN_THRESHOLD).all() or t.size > 2 ** 15:   # (NaN fails the first; the level's
        return None                                                          # slack holds for C < 2^16)
    w = np.where(np.isinf(t), 0.0, 1.0 / np.where(np.isinf(t), 1.0, t)).astype(np.float32)
    return w, WEIGHTED_MARGIN_LEVEL


def box_margin(b: GraphBuilder, x: str, raw_thr: np.ndarray, layout: str, lead: int = 0, class_axis: int = 1) -> str:
    """A superset of the boxes where some class c has score > raw_thr[c], without a pass that writes
    N x C values: alive [B, N] bool.

    x: a raw xywh_cls head [B, lead+C, N] (lead 4: its box rows get weight 0) or bare scores [B, C, N]
    (lead 0, a cut Sigmoid front): MatMul(w [1, lead+C], x) -> the weighted sum of the class scores
    per box (the box rows are never sliced out: a Slice of [B, C, N] is a copy of all N x C values);
    bare scores [B, N, C] (class_axis 2: a decoded multi-output head): MatMul(x, w [C, 1]);
    a raw xywh_obj_cls head [B, N, 5+C] (layout 'xywh_obj_cls'): MatMul(x, w [5+C, 2]) -> (weighted
    sum of the class probabilities, objectness) per box, Split + Mul -> obj * sum.
    Weights and level from margin_weights: w_c = 1 / t_c against 1 - 2^-8 where every threshold is
    positive; otherwise w_c = 1 against the lowest threshold. A superset because class scores are
    probabilities (>= 0, the layouts' contract): a float32 sum of non-negative terms is >= each term
    (up to the rounding the level allows), obj * sum >= obj * p_c, and 0 * a finite box coordinate
    is 0. slot_key then applies every class's own threshold to the gathered slots (exact). Outside
    that contract (the runner rejects such outputs in fit): a NaN score, or an infinite box
    coordinate of a raw xywh_cls head (0 * inf), makes the box's sum NaN, and the box is dropped whole."""
    C = raw_thr.size
    weighted = margin_weights(raw_thr)
    if weighted is None:
        w_cls, level = np.ones(C, np.float32), np.float32(raw_thr.astype(np.float32).min())
    else:
        w_cls, level = weighted[0], np.float32(weighted[1])
    t_min = b.f32("boxes_first/margin_level", level)
    if layout == "xywh_obj_cls":
        w = np.zeros((5 + C, 2), np.float32)
        w[5:, 0] = w_cls
        w[4, 1] = 1.0
        parts = b.op("MatMul", x, b.f32("boxes_first/sum_obj_w", w), name="boxes_first/sum_obj")       # [B, N, 2]
        split = dict(split=[1, 1]) if b.opset < 13 else {}
        halves = [b.i64("boxes_first/halves", [1, 1])] if b.opset >= 13 else []
        cls_sum, obj = b.op("Split", parts, *halves, name="boxes_first/sum_and_obj", outputs=2, axis=2, **split)
        mass = b.squeeze(b.op("Mul", obj, cls_sum, name="boxes_first/mass_n1"), [2], name="boxes_first/mass")  # [B, N]
    elif class_axis == 2:
        mass = b.squeeze(b.op("MatMul", x, b.f32("boxes_first/sum_w", w_cls.reshape(C, 1)),
                              name="boxes_first/mass_n1"), [2], name="boxes_first/mass")              # [B, N]
    else:
        w = np.concatenate([np.zeros(lead, np.float32), w_cls]).reshape(1, -1)
        mass = b.squeeze(b.op("MatMul", b.f32("boxes_first/sum_w", w), x, name="boxes_first/mass_1n"), [1],
                         name="boxes_first/mass")                                                     # [B, N]
    return b.op("Greater", mass, t_min, name="boxes_first/alive")


def compact_boxes_cumsum(b: GraphBuilder, alive: str) -> Slots:
    """alive [B, N] bool, N dynamic -> Slots: the surviving box indices in ascending order, [B, M],
    M = most survivors of any image (CumSum, ScatterElements, a data-dependent Slice; no NonZero,
    and no TopK with K = M, which can exceed TensorRT's TopK limit of 3840). The running count is
    float32 (TensorRT's CumSum is FP32/FP16 only; exact for N < 2^24), the scatter int32 (N < 2^31),
    the [B, M] result int64."""
    alive_f = b.cast(alive, FLOAT, name="boxes_first/alive_f")
    cumsum = b.op("CumSum", alive_f, b.i64("boxes_first/axis1", 1), name="boxes_first/cumsum")       # [B, N]
    count = b.reduce("ReduceSum", alive_f, [1], keepdims=True, name="boxes_first/count")           # [B, 1]
    most_f = b.reduce("ReduceMax", count, [0], keepdims=False, name="boxes_first/most_f")           # [1]
    most = b.cast(most_f, INT64, name="boxes_first/most")
    n = b.dim(alive, 1, name="boxes_first/n")                                                      # [1] int64
    index_i64 = b.op("Range", b.i64("boxes_first/i0", 0), b.squeeze(n, [0], name="boxes_first/n0"),
                     b.i64("boxes_first/i1", 1), name="boxes_first/range")
    index = b.unsqueeze(b.cast(index_i64, INT32, name="boxes_first/range_i32"), [0], name="boxes_first/box_index")
    positions = b.cast(index, FLOAT, name="boxes_first/positions")
    # non-survivors go to N + their index: distinct slots past the ones kept
    dump = b.op("Add", positions, b.cast(n, FLOAT, name="boxes_first/n_f"), name="boxes_first/dump")
    dump1 = b.op("Add", dump, b.f32("boxes_first/one", 1.0), name="boxes_first/dump_plus_one")
    shape = b.op("Shape", alive, name="boxes_first/shape")                                          # [B, N]
    index_b = b.op("Expand", index, shape, name="boxes_first/box_index_b")
    # survivor: its slot cumsum - 1; else its dump slot: dump - alive * (dump + 1 - cumsum), integers < 2^24
    # in float32 (exact), three cheap passes instead of a Where over [B, N] (~5x slower on onnxruntime's CPU)
    gap = b.op("Mul", alive_f, b.op("Sub", dump1, cumsum, name="boxes_first/gap_all"), name="boxes_first/gap")
    target = b.cast(b.op("Sub", dump, gap, name="boxes_first/target_f"), INT32, name="boxes_first/target")
    # the scatter's canvas [B, 2N]: any valid box index will do (unfilled slots are masked by valid)
    canvas = b.op("Concat", index_b, index_b, name="boxes_first/canvas", axis=1)
    scattered = b.op("ScatterElements", canvas, target, index_b, name="boxes_first/scatter", axis=1)
    box = b.cast(b.op("Slice", scattered, b.i64("boxes_first/start", [0]), most, b.i64("boxes_first/axis", [1]),
                      name="boxes_first/box_i32"), INT64, name="boxes_first/box")                    # [B, M]
    pos = b.op("Slice", positions, b.i64("boxes_first/pos_start", [0]), most, b.i64("boxes_first/pos_axis", [1]),
               name="boxes_first/positions_m")                                                      # [1, M]
    valid = b.op("Less", pos, count, name="boxes_first/valid")                                      # [B, M]
    return Slots(box, valid, most_f)


# The longest row the TopK compaction sorts: K <= the row length must stay under TensorRT's TopK limit.
TOPK_COMPACT_MAX_ROW = TRT_TOPK_MAX_K - 1


def compact_boxes_topk(b: GraphBuilder, alive: str, n: int, max_row: int = TOPK_COMPACT_MAX_ROW,
                       batch: int | None = None) -> Slots:
    """alive [B, N] bool, N static -> Slots by TopK instead of CumSum + ScatterElements (those two
    were the costliest nodes after the margin on onnxruntime's CPU).

    The N boxes are cut into R rows of L <= max_row (R = ceil(N / max_row), L = ceil(N / R);
    the last row padded with non-survivors), [B * R, L]; key = alive * (L - position in the row), so
    TopK (largest, ties by lower index) lists every row's survivors first, in ascending box index.
    K = the most survivors of any row, at most L through a Min (ep_support reads that bound: a
    TensorRT TopK takes K < 3840). Slots [B, R * K]: row by row, so ascending box index over the
    valid ones, with unfilled slots (valid False, pointing at a real box) between rows when R > 1;
    exact for any number of survivors. R = 1 (N < 3840, e.g. 320 px models) gives the compact
    [B, M] of compact_boxes_cumsum. max_row: 3839 (TOPK_COMPACT_MAX_ROW); smaller in tests.
    batch: B where the model fixes it (the reshapes' shapes are then constants)."""
    rows = -(-n // max_row)
    length = -(-n // rows)
    alive_f = b.cast(alive, FLOAT, name="boxes_first/alive_f")                                    # [B, N]
    if rows * length > n:
        alive_f = pad_last(b, alive_f, 2, rows * length - n, np.float32(0), name="boxes_first/alive_pad")
    if rows > 1:
        alive_f = b.op("Reshape", alive_f, b.i64("boxes_first/rows_shape", [-1, length]), name="boxes_first/rows")
    ramp = b.f32("boxes_first/row_ramp", np.arange(length, 0, -1, dtype=np.float32).reshape(1, -1))   # L - position
    key = b.op("Mul", alive_f, ramp, name="boxes_first/row_key")                                     # [B * R, L]
    counts = b.reduce("ReduceSum", alive_f, [1], keepdims=False, name="boxes_first/count_r")        # [B * R]
    one_row = rows == 1 and batch == 1          # K is that row's count: every slot filled
    most_row = counts if one_row else b.reduce("ReduceMax", counts, [0], keepdims=True, name="boxes_first/most_row")
    k_f = b.op("Min", most_row, b.f32("boxes_first/row_len", [float(length)]), name="boxes_first/k_f")   # [1]
    k = b.cast(k_f, INT64, name="boxes_first/k")
    value, index = b.op("TopK", key, k, name="boxes_first/compact", outputs=2, axis=-1, largest=1, sorted=1)
    if one_row:
        return Slots(index, None, k_f)
    valid = b.op("Greater", value, b.f32("boxes_first/half", 0.5), name="boxes_first/valid")         # [B * R, K]
    if rows == 1:
        return Slots(index, valid, k_f)
    if batch is not None:
        by_row = b.i64("boxes_first/by_row", [batch, rows, -1])
        flat = b.i64("boxes_first/flat", [batch, -1])
    else:
        if b.opset >= 15:
            batch_t = b.op("Shape", alive, name="boxes_first/batch", start=0, end=1)                  # [1]: B
        else:
            batch_t = b.slice(b.op("Shape", alive, name="boxes_first/shape"), [0], [1], [0], name="boxes_first/batch")
        by_row = b.op("Concat", batch_t, b.i64("boxes_first/rows_k", [rows, -1]), name="boxes_first/by_row", axis=0)
        flat = b.op("Concat", batch_t, b.i64("boxes_first/minus_one", [-1]), name="boxes_first/flat", axis=0)
    box = b.op("Add", b.op("Reshape", index, by_row, name="boxes_first/index_rows"),                 # [B, R, K]
               b.i64("boxes_first/row_start", (np.arange(rows) * length).reshape(1, rows, 1)), name="boxes_first/box_rows")
    if rows * length > n:   # the padded tail of the last row is never valid; unfilled slots there point at box N - 1
        box = b.min(box, b.i64("boxes_first/last_box", n - 1), name="boxes_first/box_in_range")
    box = b.op("Reshape", box, b.i64("boxes_first/slots_shape", [0, -1]), name="boxes_first/box")   # [B, R * K]
    valid = b.op("Reshape", valid, flat, name="boxes_first/valid_slots")                             # [B, R * K]
    return Slots(box, valid, b.op("Mul", k_f, b.f32("boxes_first/rows_f", [float(rows)]), name="boxes_first/most_f"))


def gather_slots(b: GraphBuilder, x: str, slots: Slots, box_axis: int, width: int, name: str,
                 n: int | None = None, rows: bool = True) -> str:
    """x [B, W, N] (box_axis 2) | [B, N, W] (box_axis 1) -> the slots' values: rows [B, M, W], or for
    box_axis 2 with rows=False the columns [B, W, M]. n: N where it is static.

    box_axis 2: one GatherElements over x seen as [B, W * N] (a Reshape, no copy) at the flat indices
    w * N + box, laid out as the result wants (flat_slot_index), so the slots come out as rows
    with no Transpose. onnxruntime's CPU GatherElements splits a [B, W, M] result over its intra-op
    thread pool (one worker wake-up per call with spinning off), and so does its Transpose of even
    [1, 4, M]; one row (B = 1) it copies inline. The real YOLOv8n at 320 (M = 35 of 2100 boxes),
    these nodes alone in one session, median of 3,000 runs: 10 against 21 us, cache-cold 62-69
    against 93-114 us; in the whole cut graph 3-5% of its time."""
    if box_axis == 1:
        return gather_rows(b, x, slots.box, name, width)
    flat = b.op("Reshape", x, b.i64(f"{name}_flat_shape", [0, -1]), name=f"{name}_flat")          # [B, W * N]
    got = b.op("GatherElements", flat, flat_slot_index(b, x, slots, width, n, rows, name), name=f"{name}_gather",
               axis=1)                                                                           # [B, M * W]
    return b.op("Reshape", got, b.i64(f"{name}_shape", [0, -1, width] if rows else [0, width, -1]), name=name)


def flat_slot_index(b: GraphBuilder, x: str, slots: Slots, width: int, n: int | None, rows: bool, name: str) -> str:
    """[B, M * W] int64: w * N + box[b, m] in the order of the rows [B, M, W] (rows) or the columns
    [B, W, M]; made once per (slots, W, N, layout): a Sigmoid front's probabilities and logits share it."""
    key = ("slots_flat_idx", slots.box, width, n, rows, None if n is not None else x)
    if key in b.memo:
        return b.memo[key]
    ramp = np.arange(width, dtype=np.int64).reshape((1, 1, width) if rows else (1, width, 1))
    if n is not None:
        offsets = b.i64(f"{name}_offsets", ramp * n)
    else:
        offsets = b.op("Mul", b.i64(f"{name}_ramp", ramp), b.dim(x, 2, name=f"{name}_n"), name=f"{name}_offsets")
    axis = 2 if rows else 1
    if ("slots_box3", slots.box, axis) not in b.memo:
        b.memo[("slots_box3", slots.box, axis)] = b.unsqueeze(slots.box, [axis], name=f"{name}_box3")
    idx = b.op("Add", b.memo[("slots_box3", slots.box, axis)], offsets, name=f"{name}_index3")     # [B, M, W] | [B, W, M]
    b.memo[key] = b.op("Reshape", idx, b.i64(f"{name}_index_shape", [0, -1]), name=f"{name}_index")
    return b.memo[key]


def slot_key(b: GraphBuilder, d: Dense, cmap, raw_thr: np.ndarray, slots: Slots,
             thresholds: np.ndarray | None = None) -> tuple[str, str]:
    """Decoded slots (Dense over M slots) -> (key [B, M] calibrated best score, NEG where no class
    survives or the slot is unfilled; class [B, M] int64), exactly as the dense steps compute them.
    Box-aware maps (BoxPlattMap, `thresholds` the calibrated ones): the key is the best calibrated
    logit, from box_calibration's prefilter and logit on the [B, M, C] slots (its NonZero over M x C),
    the candidates' boxes gathered from the slots' xyxy rows (steps.xyxy_rows, which NMS reads too)."""
    C = raw_thr.size
    shape = class_shape(C, d.class_axis)
    if isinstance(cmap, BoxPlattMap):
        rows = steps.xyxy_rows(b, d.boxes, d.box_format, 2 if d.class_axis == 1 else 1)     # NMS reads them too
        key = box_calibration.box_survivors_key_dense(b, d.probs, rows, d.class_axis, cmap, thresholds,
                                                      cmap.input_size, "xyxy")
        best, cls = steps.select_best_class(b, key, d.class_axis, few_boxes=True)
        return filled_only(b, best, slots), cls
    if d.logits is not None and isinstance(cmap, AffineLogitMap) and not cmap.is_identity:
        z = steps.calibrate_logits(b, d, cmap, C)
        best_z, cls = steps.select_best_class(b, steps.threshold(b, d.probs, z, raw_thr, shape, few_boxes=True), d.class_axis,
                                              few_boxes=True)
        # the Sigmoid of the best calibrated logit where a class survives in a filled slot, else NEG
        # (steps.calibrated_box_score's penalty arithmetic and this slot mask in one Where)
        kept = b.op("Greater", best_z, b.f32("calib/neg_half", NEG / 2), name="calib/box_kept")
        if slots.valid is not None:
            kept = b.op("And", slots.valid, kept, name="boxes_first/kept")
        return b.op("Where", kept, b.op("Sigmoid", best_z, name="calib/box_sigmoid"), b.f32("boxes_first/neg", NEG),
                    name="boxes_first/key"), cls
    else:
        cal = steps.calibrate(b, d, cmap, C)
        key, cls = steps.select_best_class(b, steps.threshold(b, d.probs, cal, raw_thr, shape, few_boxes=True), d.class_axis,
                                           few_boxes=True)
    return filled_only(b, key, slots), cls


def filled_only(b: GraphBuilder, key: str, slots: Slots) -> str:
    """key [B, M] -> NEG at the unfilled slots (they point at a real box: NEG whatever its scores; one
    Where on [B, M], not N x C); key itself where every slot is filled."""
    if slots.valid is None:
        return key
    return b.op("Where", slots.valid, key, b.f32("boxes_first/neg", NEG), name="boxes_first/key")


def compact_boxes(b: GraphBuilder, alive: str, n_static: int | None, batch: int | None = None) -> Slots:
    """alive [B, N] bool -> the surviving boxes' Slots: TopK by rows where N is static
    (compact_boxes_topk), CumSum + ScatterElements where it is not (compact_boxes_cumsum)."""
    return compact_boxes_topk(b, alive, n_static, batch=batch) if n_static else compact_boxes_cumsum(b, alive)


def boxes_first_candidates(b: GraphBuilder, raw: str | None, dense: Dense | None, layout: str, cmap,
                           raw_thr: np.ndarray, n_static: int | None, coeffs: str | None = None,
                           masks: int = 0, batch: int | None = None, thresholds: np.ndarray | None = None
                           ) -> tuple[str, str, Dense, str]:
    """The candidates of a single-label dense head -> (key [B, M], class [B, M], slot boxes Dense,
    most [1] float32: the most survivors of any image, Slots.most).

    raw: the head output as the model gives it ([B, 4+C, N] xywh_cls, [B, N, 5+C] xywh_obj_cls,
    float32), used when `dense` is None; dense: the head's decoded tensors where its Sigmoid front
    was cut (boxes [B, 4, N], probs and logits [B, C, N]) or a multi-output head decoded in the graph
    (yolox_raw, gfl_multilevel, detr: boxes [B, N, 4], probs [B, N, C]). The slot Dense has class
    axis 2 whatever the head's: boxes [B, M, 4] input px in the head's box format, scores [B, M, C]. coeffs: a
    seg head's mask coefficients [B, masks, N] (xywh_cls), gathered with the boxes into the slot
    Dense's `coeffs` [B, masks, M]. batch: B where the model fixes it (constant shapes). thresholds:
    the calibrated thresholds (C,), for a box-aware map (raw_thr is then its raw prefilter).
    """
    C = raw_thr.size
    if dense is not None:                       # Sigmoid-front or decoded head: boxes, probs (logits) apart
        alive = box_margin(b, dense.probs, raw_thr, layout, class_axis=dense.class_axis)
        slots = compact_boxes(b, alive, n_static, batch)
        box_axis = 2 if dense.class_axis == 1 else 1     # the slots come out as rows either way: class axis 2
        d = Dense(gather_slots(b, dense.boxes, slots, box_axis, 4, "boxes_first/boxes", n_static),
                  gather_slots(b, dense.probs, slots, box_axis, C, "boxes_first/probs", n_static), 2,
                  logits=None if dense.logits is None or isinstance(cmap, BoxPlattMap) else   # box-aware: probabilities
                  gather_slots(b, dense.logits, slots, box_axis, C, "boxes_first/logits", n_static),
                  box_format=dense.box_format)
    elif layout == "xywh_cls":                  # reduce the raw head as it is: no N x C slice
        alive = box_margin(b, raw, raw_thr, layout, lead=4)
        slots = compact_boxes(b, alive, n_static, batch)
        head = gather_slots(b, raw, slots, 2, 4 + C, "boxes_first/head", n_static)                 # [B, M, 4 + C]
        boxes, probs = b.split(head, [4, C], 2, name="decode/split")
        d = Dense(boxes, probs, class_axis=2)
    elif layout == "xywh_obj_cls":              # obj * (sum of cls): no product over N x C
        alive = box_margin(b, raw, raw_thr, layout)
        slots = compact_boxes(b, alive, n_static, batch)
        d = steps.decode_dense(b, gather_slots(b, raw, slots, 1, 5 + C, "boxes_first/head"), layout, C)
    else:
        raise ValueError(f"boxes_first_candidates: layout {layout!r} is not dense")
    key, cls = slot_key(b, d, cmap, raw_thr, slots, thresholds)
    if coeffs is not None:
        d.coeffs = gather_slots(b, coeffs, slots, 2, masks, "boxes_first/mask_coeffs", n_static, rows=False)
    return key, cls, d, slots.most


__all__ = ["Slots", "box_margin", "compact_boxes", "compact_boxes_topk", "compact_boxes_cumsum", "gather_slots",
           "flat_slot_index", "slot_key", "filled_only", "boxes_first_candidates"]
