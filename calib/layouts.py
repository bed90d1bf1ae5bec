"""Detector head layouts: recognising them from output shapes, and decoding raw outputs.

| layout         | raw output  | content                                                        |
|----------------|-------------|----------------------------------------------------------------|
| `xywh_cls`     | [B, 4+C, N] | cx, cy, w, h in input px; C class scores after sigmoid (YOLOv8) |
| `xywh_obj_cls` | [B, N, 5+C] | cx, cy, w, h; objectness; C class probabilities (YOLOv5/7, X)   |
| `end2end`      | [B, K, 6]   | x1, y1, x2, y2, score, class (YOLOv10, exports with NMS inside) |

Decoded form (`Decoded`): boxes (B, N, 4) xyxy input px float32, and either dense scores
(B, N, C) (`classes is None`) or one score and class per candidate (B, N), (B, N).
For `xywh_obj_cls` the score of class c is objectness * p(c), as YOLOv5 ranks them.

The families whose export leaves the box decode out (`yolox_raw`, `gfl_multilevel`, `detr`;
`calib.head_decoders`) reach `decode` already decoded, as one array [B, N, 4+C]: x1, y1, x2, y2
in input px and C scores (`calib.head_decoders.decoded_batch`, applied by the runner).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact.interface import HEAD_LAYOUTS, LAYOUTS
from .boxes import cxcywh_to_xyxy


@dataclass
class Decoded:
    boxes_xyxy: np.ndarray            # (B, N, 4) float32, input px
    scores: np.ndarray                # (B, N, C) dense, or (B, N) with `classes`
    classes: np.ndarray | None = None  # (B, N) int64 for end2end, else None

    @property
    def is_dense(self) -> bool:
        return self.classes is None


def num_classes_of(layout: str, output_shape: tuple) -> int | None:
    """Class count implied by a raw output shape (None where the layout does not fix it)."""
    if layout == "xywh_cls":
        return output_shape[1] - 4 if isinstance(output_shape[1], int) else None
    if layout == "xywh_obj_cls":
        return output_shape[2] - 5 if isinstance(output_shape[2], int) else None
    return None


def decode(raw: np.ndarray, layout: str) -> Decoded:
    """Raw head output (B, ...) as in the table above -> Decoded (boxes xyxy input px)."""
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise ValueError(f"raw output must be 3-D [B, ., .], got shape {raw.shape}")
    raw = raw.astype(np.float32, copy=False)
    if layout == "xywh_cls":
        boxes = cxcywh_to_xyxy(raw[:, :4, :].transpose(0, 2, 1))
        return Decoded(boxes, raw[:, 4:, :].transpose(0, 2, 1))
    if layout == "xywh_obj_cls":
        boxes = cxcywh_to_xyxy(raw[:, :, :4])
        return Decoded(boxes, raw[:, :, 4:5] * raw[:, :, 5:])
    if layout in HEAD_LAYOUTS:
        # families whose export leaves the box decode out: the runner applied their decode
        # (calib.head_decoders.decoded_batch), raw is [B, N, 4+C] x1, y1, x2, y2 input px + C scores
        return Decoded(np.ascontiguousarray(raw[:, :, :4]), raw[:, :, 4:])
    if layout == "end2end":
        if raw.shape[2] != 6:
            raise ValueError(f"end2end output must be [B, K, 6], got {raw.shape}")
        return Decoded(np.ascontiguousarray(raw[:, :, :4]), raw[:, :, 4], np.rint(raw[:, :, 5]).astype(np.int64))
    raise ValueError(f"unknown layout {layout!r}; supported: {', '.join(LAYOUTS)}")
