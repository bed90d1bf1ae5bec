"""Input checks for calib.matching: detections and ground truth as (K, 4) xyxy float64 boxes,
(K,) scores and (K,) int64 class ids, each problem named by the image it comes from."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import DetcalError


def check_threshold(t):
    if not (0.0 <= float(t) <= 1.0):
        raise ValueError(f"iou_threshold must be in [0, 1], got {t}")


def check_dets(boxes, scores, classes, what):
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must be (K, 4) xyxy, got shape {boxes.shape}")
    if not (boxes.shape[0] == scores.shape[0] == classes.shape[0]):
        raise ValueError(
            f"{what}: {boxes.shape[0]} boxes, {scores.shape[0]} scores and {classes.shape[0]} classes differ in length"
        )
    if not np.all(np.isfinite(boxes)) or not np.all(np.isfinite(scores)):
        raise DetcalError(f"{what}: NaN or inf in boxes or scores")
    classes = as_class_ids(classes, what)
    return boxes, scores, classes


def check_gts(boxes, classes, what):
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must be (M, 4) xyxy, got shape {boxes.shape}")
    if boxes.shape[0] != classes.shape[0]:
        raise ValueError(f"{what}: {boxes.shape[0]} boxes but {classes.shape[0]} classes")
    if not np.all(np.isfinite(boxes)):
        raise DetcalError(f"{what}: NaN or inf in boxes")
    return boxes, as_class_ids(classes, what)


def as_class_ids(classes, what):
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        as_int = classes.astype(np.int64)
        if not np.array_equal(as_int, classes):
            raise DetcalError(f"{what}: class ids must be integers")
        classes = as_int
    classes = classes.astype(np.int64, copy=False)
    if classes.size and classes.min() < 0:
        raise DetcalError(f"{what}: negative class id {int(classes.min())}")
    return classes


def check_index(index, n, n_images, what):
    index = np.asarray(index).reshape(-1).astype(np.int64, copy=False)
    if index.shape[0] != n:
        raise ValueError(f"{what}: length {index.shape[0]}, expected {n}")
    if index.size and (index.min() < 0 or index.max() >= n_images):
        raise ValueError(f"{what}: image index out of range [0, {n_images})")
    return index


def unpack_dets(d, i):
    if isinstance(d, Mapping):
        boxes = d["boxes_xyxy"] if "boxes_xyxy" in d else d["boxes"]
        return check_dets(boxes, d["scores"], d["classes"], f"detections of image {i}")
    boxes, scores, classes = d
    return check_dets(boxes, scores, classes, f"detections of image {i}")


def unpack_gts(g, i):
    if isinstance(g, Mapping):
        for key in ("gt_boxes_xyxy", "boxes_xyxy", "boxes"):
            if key in g:
                boxes = g[key]
                break
        else:
            raise KeyError(f"ground truth of image {i}: no 'gt_boxes_xyxy' key")
        classes = g["gt_classes"] if "gt_classes" in g else g["classes"]
        return check_gts(boxes, classes, f"ground truth of image {i}")
    boxes, classes = g
    return check_gts(boxes, classes, f"ground truth of image {i}")
