"""The reference pipeline's threshold + calibrate steps for the box-aware map (calib.artifact.box_map).

`calib.pipeline.postprocess` calls `threshold_calibrate_box` in place of `threshold` ->
`calibrate` when the map is a BoxPlattMap; every later step is unchanged. The one difference
that box-awareness forces: the survival test is per candidate (p > pre_c, then s > L_c on the
calibrated logit s, see BoxPlattMap), not a raw threshold per class, and the candidates carry
the calibrated logit s as their score, so that the best class per box, the pre-NMS top-k and NMS
rank by s, which the graph (onnx_ops.box_calibration) computes bit for bit. The calibrated
score sigmoid(s) (`box_scores`) is computed for the detections kept by NMS only.
"""
from __future__ import annotations

import numpy as np

from .artifact.box_map import BoxPlattMap, sigmoid_f32
from .layouts import Decoded


def threshold_calibrate_box(decoded: Decoded, b: int, cmap: BoxPlattMap, thresholds: np.ndarray):
    """Image b's surviving (box, class) candidates -> calib.pipeline.Candidates whose score is the
    calibrated logit s (M,) float32.

    Dense (N, C) scores: prefilter p > pre_c in row-major order (by box, then class), tie key
    box * C + class; end2end (N,) scores and classes: classes outside [0, C) never survive, tie key
    box. thresholds (C,) calibrated. The boxes are the decoded xyxy input px; the input size the
    map's own.
    """
    from .pipeline import Candidates

    pre = cmap.prefilter_thresholds(thresholds)
    lt = cmap.logit_thresholds(thresholds)
    boxes = decoded.boxes_xyxy[b]
    if decoded.is_dense:
        scores = decoded.scores[b].astype(np.float32, copy=False)      # (N, C)
        box_idx, cls_idx = np.nonzero(scores > pre[None, :])
        tie = box_idx * scores.shape[1] + cls_idx
    else:
        scores = decoded.scores[b].astype(np.float32, copy=False)      # (N,)
        classes = decoded.classes[b]
        valid = (classes >= 0) & (classes < cmap.num_classes)
        safe = np.where(valid, classes, 0)
        box_idx = np.nonzero(valid & (scores > pre[safe]))[0]
        cls_idx = safe[box_idx]
        scores = scores[:, None]
        tie = box_idx
    p = scores[box_idx, cls_idx if decoded.is_dense else 0]
    s = cmap.calibrated_logit(p, cls_idx, boxes[box_idx])
    ok = s > lt[cls_idx]
    return Candidates(box_idx[ok].astype(np.int64), cls_idx[ok].astype(np.int64), s[ok], tie[ok].astype(np.int64))


def box_scores(logits: np.ndarray) -> np.ndarray:
    """Calibrated logits (K,) of the kept detections, descending -> calibrated scores (K,) float32,
    descending: their sigmoids sorted, since a float32 sigmoid is not monotone in its last bit; each
    detection keeps the score of its rank, within an ulp or so of its own."""
    return -np.sort(-sigmoid_f32(logits))
