"""Segmentation heads (Ultralytics YOLOv8-seg / YOLO11-seg): the mask coefficient rows of the head.

A seg export is an `xywh_cls` head with M extra rows after the class scores, plus a prototypes
output:

    output0   [B, 4+C+M, N]   cx, cy, w, h (input px), C class scores (after sigmoid), M mask
                              coefficients (raw, not sigmoid; typically M = 32)
    output1   [B, M, H/4, W/4] mask prototypes (left as they are by detcal)

The class scores are rows 4..4+C only: everything that scores, fits or evaluates sees the head
without its coefficient rows (`strip_mask_coeffs`); the reference pipeline carries the
coefficients of each box to the kept detections (`split_mask_coeffs`), and the patched graph
outputs them as `det_masks_coeffs` [B, K, M] (onnx_ops.masks). `HeadRecognition.params` and
`ModelInfo.head_params` name them: MASK_COEFFS (M) and PROTOTYPES (the prototypes output's name).
"""
from __future__ import annotations

import numpy as np

MASK_COEFFS = "mask_coeffs"      # head_params key: M, the coefficient rows after the class scores
PROTOTYPES = "prototypes"        # head_params key: the prototypes output's name


def mask_count(head_params: dict | None) -> int:
    """M from a head's parameters (0 when the head has no mask coefficients)."""
    return int((head_params or {}).get(MASK_COEFFS) or 0)


def split_mask_coeffs(raw: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray | None]:
    """raw (B, 4+C+M, N) -> (detection head (B, 4+C, N), coefficients (B, N, M) float32); m = 0: (raw, None)."""
    if not m:
        return raw, None
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[1] <= 4 + m:
        raise ValueError(f"a seg head with {m} mask coefficients must be [B, 4+C+{m}, N], got shape {raw.shape}")
    coeffs = np.ascontiguousarray(raw[:, -m:, :].transpose(0, 2, 1), dtype=np.float32)
    return raw[:, :-m, :], coeffs


def strip_mask_coeffs(raw: np.ndarray, m: int) -> np.ndarray:
    """raw (B, 4+C+M, N) -> (B, 4+C, N): the head as a plain xywh_cls head (m = 0: unchanged)."""
    return split_mask_coeffs(raw, m)[0]
