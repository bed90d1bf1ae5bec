"""The tensors that flow between the steps of the inserted graph (names of tensors, not values).

B batch, N candidates, C classes, K1 slots after pre-NMS top-k, M <= K1 after trim_slots, K' = min(max_det, K1).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Dense:
    """Decoded dense head: boxes cxcywh and per-class scores (probabilities or logits).

    class_axis 1: boxes [B, 4, N], scores [B, C, N] (xywh_cls). class_axis 2: boxes [B, N, 4],
    scores [B, N, C] (xywh_obj_cls). `logits` is set when the head's Sigmoid was cut off
    (calibration then works on the exact logits, not on logit(clip(p))).
    """

    boxes: str
    probs: str
    class_axis: int
    logits: str | None = None
    box_format: str = "cxcywh"      # "xyxy" for heads decoded from distances (gfl_multilevel)
    coeffs: str | None = None       # seg heads: mask coefficients [B, M, N], the boxes' columns (onnx_ops.masks)


@dataclass
class Sparse:
    """Decoded end2end head: boxes xyxy [B, K, 4], score [B, K], class [B, K] int64."""

    boxes: str
    scores: str
    classes: str


@dataclass
class TopK:
    score: str      # [B, K1] calibrated score (NEG where not a candidate)
    index: str | None   # [B, K1] int64 index into the (padded) candidate axis; None: the slots in box order
                        # (patch.slots_in_box_order: score and valid [B, M] over every slot, no top-k)
    valid: str      # [B, K1] bool
    k1: int         # K1 = max(pre_nms_top_k, max_det) (capped at a static N'), a constant (TensorRT: < 3840)
    pad: int        # non-candidates appended to the candidate axis (0 when N >= K1 is known; box order: the
                    # output compaction's tail, steps.kept_by_score)


@dataclass
class Kept:
    """class_aware_nms's result, compacted: the kept candidates in score order, K' = min(max_det, K1).

    score [B, K'], classes [B, K'] int64, boxes [B, K', 4] xyxy input px, num [B, 1] float
    (count kept), row_ok [B, K'] bool (slot < num); slots at and after num hold anything."""

    score: str
    classes: str
    boxes: str
    num: str
    row_ok: str
    k: int
    pick: str | None = None     # [B, K'] int64: the kept candidates' positions among the K1 (M) slots
    # rows at and after num are padding already final: class -1, boxes that to_original_pixels maps
    # to (0, 0, 0, 0) (steps.kept_by_score), so pack_fixed needs no Where for them
    padded: bool = False
    # score is a function of the ranking key that a kernel may not keep monotone in its last bit (the
    # box-aware Sigmoid of the calibrated logit), so pack_fixed sorts the output scores' values
    sort_scores: bool = False
