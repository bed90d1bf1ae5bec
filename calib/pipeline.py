"""The numpy reference post-processing pipeline: the oracle for the patched ONNX graph.

Order (the contract `onnx_ops` reproduces node for node):

    decode -> calibrate -> per-class thresholds (calibrated score > threshold)
    -> one class per box, the best calibrated one (unless multi_label)
    -> the pre_nms_top_k best candidates by calibrated score
    -> letterbox mask (drop boxes whose centre lies in the padding)
    -> class-aware NMS (suppress when IoU > iou_threshold) -> the best max_det
    -> original-image pixels, clipped to the image.

Thresholds are applied on raw scores through `CalibrationMap.raw_thresholds` (exact, since
every map is monotone per class) and only the survivors are calibrated. Ties are broken by
candidate index: box index for single-label, box * C + class for multi-label; a box's best
class on a tie is the lowest class index. Arithmetic is float32, as in the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact import CalibrationMap, PostprocessConfig, identity_map
from .layouts import Decoded, decode
from .letterbox import centre_in_content, input_to_original_xyxy
from .nms import batched_nms_xyxy


@dataclass
class Detections:
    """One image's final detections, best score first."""

    boxes_xyxy: np.ndarray     # (K, 4) float32, original-image px, clipped
    scores: np.ndarray         # (K,) float32, calibrated
    classes: np.ndarray        # (K,) int64
    boxes_input_xyxy: np.ndarray | None = None  # (K, 4) float32, model-input px, unclipped

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def select_candidates(
    decoded: Decoded, b: int, calibration: CalibrationMap, raw_thresholds: np.ndarray, multi_label: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image b's surviving candidates -> (box index (M,), class (M,), calibrated score (M,) float32),
    sorted by calibrated score, descending, ties by candidate index."""
    rthr = raw_thresholds.astype(np.float32)
    if decoded.is_dense:
        scores = decoded.scores[b]                                   # (N, C)
        box_idx, cls_idx = np.nonzero(scores > rthr[None, :])       # row-major: by box, then class
        cal = calibration.transform(scores[box_idx, cls_idx], cls_idx).astype(np.float32)
        if not multi_label and box_idx.size:
            # best calibrated class per box; on a tie the lowest class index
            order = np.lexsort((cls_idx, -cal, box_idx))
            box_idx, cls_idx, cal = box_idx[order], cls_idx[order], cal[order]
            first = np.r_[True, box_idx[1:] != box_idx[:-1]]
            box_idx, cls_idx, cal = box_idx[first], cls_idx[first], cal[first]
        tie_key = box_idx * scores.shape[1] + cls_idx if multi_label else box_idx
    else:
        scores, classes = decoded.scores[b], decoded.classes[b]     # (N,), (N,)
        num_classes = rthr.shape[0]
        valid = (classes >= 0) & (classes < num_classes)
        safe_cls = np.where(valid, classes, 0)
        box_idx = np.nonzero(valid & (scores > rthr[safe_cls]))[0]
        cls_idx = classes[box_idx]
        cal = calibration.transform(scores[box_idx], cls_idx).astype(np.float32)
        tie_key = box_idx
    order = np.lexsort((tie_key, -cal))
    return box_idx[order].astype(np.int64), cls_idx[order].astype(np.int64), cal[order]


def postprocess(
    raw: np.ndarray | Decoded,
    layout: str,
    rows: np.ndarray,
    calibration: CalibrationMap | None = None,
    thresholds: np.ndarray | float = 0.25,
    config: PostprocessConfig = PostprocessConfig(),
) -> list[Detections]:
    """Raw head output for a batch -> final detections per image.

    raw: (B, ...) as `calib.layouts` describes `layout` (or an already decoded batch);
    rows: (B, 6) letterbox rows; calibration: a CalibrationMap (None = identity);
    thresholds: calibrated score thresholds, scalar or (C,).
    """
    decoded = raw if isinstance(raw, Decoded) else decode(raw, layout)
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    batch = decoded.boxes_xyxy.shape[0]
    if rows.shape[0] != batch:
        raise ValueError(f"{rows.shape[0]} letterbox rows for a batch of {batch}")
    num_classes = decoded.scores.shape[2] if decoded.is_dense else (
        calibration.num_classes if calibration is not None else int(np.size(thresholds)))
    calibration = calibration if calibration is not None else identity_map(num_classes)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (num_classes,))
    raw_thr = calibration.raw_thresholds(thr)
    out = []
    for b in range(batch):
        box_idx, cls_idx, cal = select_candidates(decoded, b, calibration, raw_thr, config.multi_label)
        box_idx, cls_idx, cal = box_idx[: config.pre_nms_top_k], cls_idx[: config.pre_nms_top_k], cal[: config.pre_nms_top_k]
        boxes = decoded.boxes_xyxy[b][box_idx]
        if config.mask_padding:
            inside = centre_in_content(boxes, rows[b])
            boxes, cls_idx, cal = boxes[inside], cls_idx[inside], cal[inside]
        nms_classes = cls_idx if config.class_aware else np.zeros_like(cls_idx)
        keep = batched_nms_xyxy(boxes, cal, nms_classes, config.iou_threshold, max_keep=config.max_det)
        boxes, cls_idx, cal = boxes[keep], cls_idx[keep], cal[keep]
        out.append(Detections(input_to_original_xyxy(boxes, rows[b]), cal, cls_idx, boxes))
    return out


def pack_fixed(dets: list[Detections], max_det: int) -> dict[str, np.ndarray]:
    """Per-image detections -> the patched model's fixed-size outputs (EfficientNMS layout).

    num_dets (B, 1) int32, det_boxes (B, K, 4) float32, det_scores (B, K) float32,
    det_classes (B, K) int32; rows at and after num_dets are zero, with class -1.
    """
    batch = len(dets)
    out = {
        "num_dets": np.zeros((batch, 1), np.int32),
        "det_boxes": np.zeros((batch, max_det, 4), np.float32),
        "det_scores": np.zeros((batch, max_det), np.float32),
        "det_classes": np.full((batch, max_det), -1, np.int32),
    }
    for b, d in enumerate(dets):
        n = min(len(d), max_det)
        out["num_dets"][b, 0] = n
        out["det_boxes"][b, :n] = d.boxes_xyxy[:n]
        out["det_scores"][b, :n] = d.scores[:n]
        out["det_classes"][b, :n] = d.classes[:n]
    return out
