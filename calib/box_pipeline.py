"""The reference pipeline's calibrate-and-threshold step for the box-aware map (calib.box_map).

Same order and tie rules as calib.pipeline.postprocess, with one difference that box-awareness
forces: the survival test is per candidate (p > pre_c, then s > L_c on the calibrated logit s,
see BoxPlattMap), not a raw threshold per class, and candidates are ranked by s itself (best
class per box, pre-NMS top-k, NMS), which the graph computes bit for bit. The calibrated score
sigmoid(s) is computed for the survivors of NMS only.
"""
from __future__ import annotations

import numpy as np

from .box_map import BoxPlattMap, sigmoid_f32
from .layouts import Decoded, decode
from .letterbox import centre_in_content, input_to_original_xyxy
from .nms import batched_nms_xyxy
from .pipeline import Detections, PostprocessConfig


def select_candidates_box(decoded: Decoded, b: int, cmap: BoxPlattMap, thresholds: np.ndarray, input_size,
                          multi_label: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image b's surviving candidates -> (box index (M,), class (M,), calibrated logit (M,) float32),
    sorted by calibrated logit, descending, ties by candidate index (box, or box * C + class)."""
    pre = cmap.prefilter_thresholds(thresholds)
    lt = cmap.logit_thresholds(thresholds)
    boxes = decoded.boxes_xyxy[b]
    if decoded.is_dense:
        scores = decoded.scores[b].astype(np.float32, copy=False)      # (N, C)
        box_idx, cls_idx = np.nonzero(scores > pre[None, :])            # row-major: by box, then class
        s = cmap.calibrated_logit(scores[box_idx, cls_idx], cls_idx, boxes[box_idx], input_size)
        ok = s > lt[cls_idx]
        box_idx, cls_idx, s = box_idx[ok], cls_idx[ok], s[ok]
        if not multi_label and box_idx.size:
            order = np.lexsort((cls_idx, -s, box_idx))                 # best logit per box, then lowest class
            box_idx, cls_idx, s = box_idx[order], cls_idx[order], s[order]
            first = np.r_[True, box_idx[1:] != box_idx[:-1]]
            box_idx, cls_idx, s = box_idx[first], cls_idx[first], s[first]
        tie_key = box_idx * scores.shape[1] + cls_idx if multi_label else box_idx
    else:
        scores = decoded.scores[b].astype(np.float32, copy=False)      # (N,)
        classes = decoded.classes[b]
        valid = (classes >= 0) & (classes < cmap.num_classes)
        safe = np.where(valid, classes, 0)
        cand = np.nonzero(valid & (scores > pre[safe]))[0]
        s = cmap.calibrated_logit(scores[cand], safe[cand], boxes[cand], input_size)
        ok = s > lt[safe[cand]]
        box_idx, cls_idx, s = cand[ok], safe[cand][ok], s[ok]
        tie_key = box_idx
    order = np.lexsort((tie_key, -s))
    return box_idx[order].astype(np.int64), cls_idx[order].astype(np.int64), s[order]


def postprocess_box(raw: np.ndarray | Decoded, layout: str, rows: np.ndarray, cmap: BoxPlattMap,
                    thresholds, input_size=None, config: PostprocessConfig = PostprocessConfig()) -> list[Detections]:
    """calib.pipeline.postprocess with the box-aware map: raw head output (B, ...) of `layout`,
    rows (B, 6) letterbox rows, thresholds calibrated (C,) or scalar, input_size (H, W) (None:
    the map's) -> final detections per image (scores calibrated, float32)."""
    input_size = cmap._size(input_size)
    decoded = raw if isinstance(raw, Decoded) else decode(raw, layout)
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (cmap.num_classes,))
    out = []
    for b in range(decoded.boxes_xyxy.shape[0]):
        box_idx, cls_idx, s = select_candidates_box(decoded, b, cmap, thr, input_size, config.multi_label)
        box_idx, cls_idx, s = box_idx[: config.pre_nms_top_k], cls_idx[: config.pre_nms_top_k], s[: config.pre_nms_top_k]
        boxes = decoded.boxes_xyxy[b][box_idx]
        if config.mask_padding:
            inside = centre_in_content(boxes, rows[b])
            boxes, cls_idx, s = boxes[inside], cls_idx[inside], s[inside]
        nms_classes = cls_idx if config.class_aware else np.zeros_like(cls_idx)
        keep = batched_nms_xyxy(boxes, s, nms_classes, config.iou_threshold, max_keep=config.max_det)
        boxes, cls_idx, s = boxes[keep], cls_idx[keep], s[keep]
        out.append(Detections(input_to_original_xyxy(boxes, rows[b]), sigmoid_f32(s), cls_idx, boxes))
    return out
