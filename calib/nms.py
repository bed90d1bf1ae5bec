"""Reference non-maximum suppression, with the semantics of ONNX NonMaxSuppression / torchvision.

A box is suppressed when its IoU with an already kept box of its class is > iou_threshold.
Candidates are visited in the order given by a stable sort on score, descending, so ties keep
their input order. IoU here is computed in float32 with onnxruntime's formula (zero-area boxes
never suppress or get suppressed), so that this module is an exact oracle for the graph.
"""
from __future__ import annotations

import numpy as np


def _iou_one_to_many_f32(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """float32 IoU of box (4,) against boxes (M, 4), both xyxy, exactly as onnxruntime computes it."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(x2 - x1, np.float32(0)) * np.maximum(y2 - y1, np.float32(0))
    area1 = (box[2] - box[0]) * (box[3] - box[1])
    area2 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area1 + area2 - inter
    valid = (inter > 0) & (area1 > 0) & (area2 > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, inter / np.where(valid, union, np.float32(1)), np.float32(0))


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Single-class NMS. boxes (N, 4) xyxy, scores (N,) -> kept indices (K,) int64, best score first.

    Boxes are normalised to min/max corners first (as onnxruntime does). Iterations run over
    kept boxes only, and stop after `max_keep` of them.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    order = np.argsort(-scores, kind="stable")
    thr = np.float32(iou_threshold)
    keep = []
    limit = len(order) if max_keep is None else max_keep
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[_iou_one_to_many_f32(boxes[i], boxes[rest]) <= thr]
    return np.asarray(keep, dtype=np.int64)


def class_offset_boxes_xyxy(boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Move each class to its own region so one NMS call is class-aware (torchvision's trick).

    boxes (N, 4) xyxy, classes (N,) int -> (N, 4) float32: boxes - min + class * (max - min + 1),
    min/max over all coordinates of these boxes. Computed in float32, as the graph does.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return boxes.copy()
    lo = boxes.min()
    span = boxes.max() - lo + np.float32(1)
    offset = np.asarray(classes).astype(np.float32) * span
    return (boxes - lo) + offset[:, None]


def batched_nms_xyxy(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """Class-aware NMS. boxes (N, 4) xyxy, scores (N,), classes (N,) -> kept indices, best first.

    Boxes of different classes never suppress each other (up to float32 rounding of the class
    offset, which the ONNX graph reproduces exactly).
    """
    return nms_xyxy(class_offset_boxes_xyxy(boxes, classes), scores, iou_threshold, max_keep)
