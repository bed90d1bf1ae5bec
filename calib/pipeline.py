"""The numpy reference post-processing pipeline: the oracle for the patched ONNX graph.

One small pure function per step, in the order of the contract; `onnx_ops.steps` holds the
graph builders of the same names in the same order (put the two files side by side):

    decode              raw head output -> Decoded (boxes xyxy input px, scores)
    threshold           per-class thresholds: calibrated score > t  <=>  raw score > r
                        (r = CalibrationMap.raw_thresholds(t); exact, every map is monotone per
                        class), so the test runs on raw scores and only survivors are calibrated
    calibrate           the survivors' scores -> calibrated (float32)
    select_best_class   one class per box, the best calibrated one (skipped for multi_label)
    pre_nms_top_k       the pre_nms_top_k best candidates by calibrated score
    mask_letterbox      drop boxes whose centre lies in the letterbox padding
    class_aware_nms     suppress when IoU > iou_threshold (per class), keep the best max_det
    to_original_pixels  input px -> original-image px, clipped to the image

Box-aware maps (kind platt_box) make the threshold per candidate: `threshold` + `calibrate` are
then `calib.box_pipeline.threshold_calibrate_box`, the candidates are ranked by the calibrated
logit (bit-exact in the graph) and the kept detections' scores are its sigmoid (`box_scores`).

Ties are broken by candidate index: box index for single-label, box * C + class for
multi-label; a box's best class on a tie is the lowest class index. Arithmetic is float32, as
in the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact import BOX_KIND, DET_MASKS_COEFFS, PATCHED_OUTPUTS, CalibrationMap, PostprocessConfig, identity_map  # noqa: F401 (re-export)
from .box_pipeline import box_scores, threshold_calibrate_box
from .layouts import Decoded, decode
from .letterbox import centre_in_content, input_to_original_xyxy
from .mask_coeffs import split_mask_coeffs
from .nms import batched_nms_xyxy


@dataclass
class Detections:
    """One image's final detections, best score first."""

    boxes_xyxy: np.ndarray     # (K, 4) float32, original-image px, clipped
    scores: np.ndarray         # (K,) float32, calibrated
    classes: np.ndarray        # (K,) int64
    boxes_input_xyxy: np.ndarray | None = None  # (K, 4) float32, model-input px, unclipped
    mask_coeffs: np.ndarray | None = None       # (K, M) float32, seg heads: each detection's mask coefficients

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class Candidates:
    """One image's candidates (box, class) after `threshold`: M of them.

    box (M,) int64 index into the decoded candidates; cls (M,) int64; score (M,) raw, then
    calibrated float32 after `calibrate`; tie (M,) int64 the tie-break key (lower wins).
    """

    box: np.ndarray
    cls: np.ndarray
    score: np.ndarray
    tie: np.ndarray

    def take(self, sel) -> "Candidates":
        return Candidates(self.box[sel], self.cls[sel], self.score[sel], self.tie[sel])


# decode: calib.layouts.decode(raw, layout) -> Decoded, re-exported here as the first step


def threshold(decoded: Decoded, b: int, raw_thresholds: np.ndarray) -> Candidates:
    """Image b's (box, class) pairs whose raw score > raw threshold of the class.

    Dense (N, C) scores: in row-major order (by box, then class), tie key box * C + class.
    end2end (N,) scores and classes: classes outside [0, C) never survive, tie key box.
    raw_thresholds (C,) float64 (cast to float32, as the graph bakes them) -> Candidates (raw scores).
    """
    rthr = raw_thresholds.astype(np.float32)
    if decoded.is_dense:
        scores = decoded.scores[b]                                   # (N, C)
        box_idx, cls_idx = np.nonzero(scores > rthr[None, :])
        return Candidates(box_idx, cls_idx, scores[box_idx, cls_idx], box_idx * scores.shape[1] + cls_idx)
    scores, classes = decoded.scores[b], decoded.classes[b]         # (N,), (N,)
    valid = (classes >= 0) & (classes < rthr.shape[0])
    safe_cls = np.where(valid, classes, 0)
    box_idx = np.nonzero(valid & (scores > rthr[safe_cls]))[0]
    return Candidates(box_idx, classes[box_idx], scores[box_idx], box_idx)


def calibrate(cands: Candidates, calibration: CalibrationMap) -> Candidates:
    """Raw scores (M,) -> calibrated scores (M,) float32, per candidate class."""
    cal = calibration.transform(cands.score, cands.cls).astype(np.float32)
    return Candidates(cands.box, cands.cls, cal, cands.tie)


def select_best_class(cands: Candidates) -> Candidates:
    """Keep one candidate per box: the best calibrated class, the lowest class index on a tie."""
    if not cands.box.size:
        return cands
    order = np.lexsort((cands.cls, -cands.score, cands.box))
    cands = cands.take(order)
    first = np.r_[True, cands.box[1:] != cands.box[:-1]]
    return cands.take(first)


def pre_nms_top_k(cands: Candidates, k: int) -> Candidates:
    """The k best candidates, sorted by calibrated score descending, ties by the lower tie key."""
    order = np.lexsort((cands.tie, -cands.score))[:k]
    c = cands.take(order)
    return Candidates(c.box.astype(np.int64), c.cls.astype(np.int64), c.score, c.tie)


def mask_letterbox(boxes: np.ndarray, cands: Candidates, row: np.ndarray) -> tuple[np.ndarray, Candidates]:
    """boxes (M, 4) xyxy input px of the candidates, row (6,) -> those centred on the image content."""
    inside = centre_in_content(boxes, row)
    return boxes[inside], cands.take(inside)


def class_aware_nms(boxes: np.ndarray, cands: Candidates, config: PostprocessConfig) -> np.ndarray:
    """boxes (M, 4) xyxy input px, sorted candidates -> kept positions (<= max_det,) int64, best first.

    Suppression when IoU > iou_threshold, within a class (class_aware) or across all."""
    nms_classes = cands.cls if config.class_aware else np.zeros_like(cands.cls)
    return batched_nms_xyxy(boxes, cands.score, nms_classes, config.iou_threshold, max_keep=config.max_det)


def to_original_pixels(boxes: np.ndarray, row: np.ndarray) -> np.ndarray:
    """boxes (K, 4) xyxy input px, row (6,) -> (K, 4) xyxy original-image px, clipped to the image."""
    return input_to_original_xyxy(boxes, row)


def select_candidates(
    decoded: Decoded, b: int, calibration: CalibrationMap, raw_thresholds: np.ndarray, multi_label: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """threshold -> calibrate -> select_best_class (unless multi_label), sorted: image b's candidates
    -> (box index (M,), class (M,), calibrated score (M,) float32), best first."""
    cands = calibrate(threshold(decoded, b, raw_thresholds), calibration)
    if decoded.is_dense and not multi_label:
        cands = select_best_class(cands)
    cands = pre_nms_top_k(cands, cands.box.size)
    return cands.box, cands.cls, cands.score


def postprocess(
    raw: np.ndarray | Decoded,
    layout: str,
    rows: np.ndarray,
    calibration: CalibrationMap | None = None,
    thresholds: np.ndarray | float = 0.25,
    config: PostprocessConfig = PostprocessConfig(),
    *,
    mask_coeffs: int = 0,
) -> list[Detections]:
    """Raw head output for a batch -> final detections per image: the steps above, composed.

    raw: (B, ...) as `calib.layouts` describes `layout` (or an already decoded batch);
    rows: (B, 6) letterbox rows; calibration: a CalibrationMap (None = identity);
    thresholds: calibrated score thresholds, scalar or (C,).
    mask_coeffs: M, for a seg head raw (B, 4+C+M, N) (xywh_cls): rows 4..4+C score, and each
    kept detection carries its box's M coefficient rows (`Detections.mask_coeffs`, same order).
    """
    coeffs = None
    if mask_coeffs:
        if isinstance(raw, Decoded) or layout != "xywh_cls":
            raise ValueError("mask_coeffs needs the raw xywh_cls head [B, 4+C+M, N]")
        raw, coeffs = split_mask_coeffs(raw, mask_coeffs)                       # coeffs (B, N, M)
    decoded = raw if isinstance(raw, Decoded) else decode(raw, layout)
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    batch = decoded.boxes_xyxy.shape[0]
    if rows.shape[0] != batch:
        raise ValueError(f"{rows.shape[0]} letterbox rows for a batch of {batch}")
    num_classes = decoded.scores.shape[2] if decoded.is_dense else (
        calibration.num_classes if calibration is not None else int(np.size(thresholds)))
    calibration = calibration if calibration is not None else identity_map(num_classes)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (num_classes,))
    box_aware = calibration.kind == BOX_KIND
    raw_thr = None if box_aware else calibration.raw_thresholds(thr)
    out = []
    for b in range(batch):
        if box_aware:
            cands = threshold_calibrate_box(decoded, b, calibration, thr)
        else:
            cands = calibrate(threshold(decoded, b, raw_thr), calibration)
        if decoded.is_dense and not config.multi_label:
            cands = select_best_class(cands)
        cands = pre_nms_top_k(cands, config.pre_nms_top_k)
        boxes = decoded.boxes_xyxy[b][cands.box]
        if config.mask_padding:
            boxes, cands = mask_letterbox(boxes, cands, rows[b])
        keep = class_aware_nms(boxes, cands, config)
        boxes, cands = boxes[keep], cands.take(keep)
        scores = box_scores(cands.score) if box_aware else cands.score
        out.append(Detections(to_original_pixels(boxes, rows[b]), scores, cands.cls, boxes,
                              None if coeffs is None else coeffs[b][cands.box]))
    return out


def pack_fixed(dets: list[Detections], max_det: int) -> dict[str, np.ndarray]:
    """Per-image detections -> the patched model's fixed-size outputs (EfficientNMS layout).

    num_dets (B, 1) int32, det_boxes (B, K, 4) float32, det_scores (B, K) float32,
    det_classes (B, K) int32; rows at and after num_dets are zero, with class -1.
    Seg heads (detections with mask_coeffs (K', M)): also det_masks_coeffs (B, K, M) float32,
    in det_boxes' order, zero at and after num_dets.
    """
    batch = len(dets)
    num_dets, det_boxes, det_scores, det_classes = PATCHED_OUTPUTS
    out = {
        num_dets: np.zeros((batch, 1), np.int32),
        det_boxes: np.zeros((batch, max_det, 4), np.float32),
        det_scores: np.zeros((batch, max_det), np.float32),
        det_classes: np.full((batch, max_det), -1, np.int32),
    }
    for b, d in enumerate(dets):
        n = min(len(d), max_det)
        out[num_dets][b, 0] = n
        out[det_boxes][b, :n] = d.boxes_xyxy[:n]
        out[det_scores][b, :n] = d.scores[:n]
        out[det_classes][b, :n] = d.classes[:n]
    with_masks = [d for d in dets if d.mask_coeffs is not None]
    if with_masks:
        m = with_masks[0].mask_coeffs.shape[1]
        out[DET_MASKS_COEFFS] = np.zeros((batch, max_det, m), np.float32)
        for b, d in enumerate(dets):
            n = min(len(d), max_det)
            out[DET_MASKS_COEFFS][b, :n] = d.mask_coeffs[:n]
    return out
