"""Box geometry. Every function names its box format; arrays are (..., 4).

`xyxy`   = x1, y1, x2, y2 (x2 >= x1, y2 >= y1 for a valid box)
`cxcywh` = centre x, centre y, width, height
Units (pixels or normalised) are the caller's; nothing here cares.
"""
from __future__ import annotations

import numpy as np


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) cxcywh -> (..., 4) xyxy, same dtype."""
    boxes = np.asarray(boxes)
    half_w = boxes[..., 2] / 2
    half_h = boxes[..., 3] / 2
    return np.stack(
        [boxes[..., 0] - half_w, boxes[..., 1] - half_h, boxes[..., 0] + half_w, boxes[..., 1] + half_h], axis=-1
    )


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) xyxy -> (..., 4) cxcywh, same dtype."""
    boxes = np.asarray(boxes)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.stack([boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w, h], axis=-1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) xyxy -> (...,) area; inverted boxes have area 0."""
    boxes = np.asarray(boxes)
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU. boxes1 (N, 4), boxes2 (M, 4), both xyxy -> (N, M) float64 in [0, 1].

    Zero-area boxes have IoU 0 with everything, themselves included.
    """
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = box_area(b1)
    area2 = box_area(b2)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


def box_intersection_pairs(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Row-wise intersection area: boxes1 (P, 4), boxes2 (P, 4), both xyxy -> (P,) float64."""
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(b1[:, 2:], b2[:, 2:]) - np.maximum(b1[:, :2], b2[:, :2]), 0, None)
    return wh[:, 0] * wh[:, 1]


def box_iou_pairs(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Row-wise IoU: boxes1 (P, 4), boxes2 (P, 4), both xyxy -> (P,) float64.

    Equal to ``np.diag(box_iou(boxes1, boxes2))``, without the P x P matrix.
    """
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    inter = box_intersection_pairs(b1, b2)
    union = box_area(b1) + box_area(b2) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


def clip_boxes_xyxy(boxes: np.ndarray, width, height) -> np.ndarray:
    """(..., 4) xyxy clipped to [0, width] x [0, height].

    width, height: scalars or arrays broadcastable against boxes[..., 0] (one size per box or per row).
    """
    boxes = np.asarray(boxes)
    out = np.empty_like(boxes)
    out[..., 0] = np.clip(boxes[..., 0], 0, width)
    out[..., 2] = np.clip(boxes[..., 2], 0, width)
    out[..., 1] = np.clip(boxes[..., 1], 0, height)
    out[..., 3] = np.clip(boxes[..., 3], 0, height)
    return out
