"""Letterbox geometry: the one definition of the row that maps input pixels to original pixels.

A letterbox row is float64 (6,) = (orig_w, orig_h, scale_x, scale_y, pad_left, pad_top) with

    input_px = orig_px * scale + pad

for both geometries: `letterbox` (Ultralytics' centred letterbox, scale_x == scale_y) and
`stretch` (plain resize, scale_x != scale_y, no padding). The patched model takes the same rows
as its extra input `letterbox` [B, 6]. The row's columns are defined by the contract
(`calib.artifact.ROW_FIELDS`); this module is their geometry.
"""
from __future__ import annotations

import numpy as np

from .artifact.configs import RESIZE_MODES
from .artifact.interface import ORIG_H, ORIG_W, PAD_LEFT, PAD_TOP, ROW_FIELDS, SCALE_X, SCALE_Y  # noqa: F401


def letterbox_row(orig_w: int, orig_h: int, size: tuple[int, int], mode: str = "letterbox") -> np.ndarray:
    """The row for an image of orig_w x orig_h served at input size (H, W) -> float64 (6,).

    `letterbox` follows Ultralytics' LetterBox (centred, scale-up allowed): r = min(H/h, W/w),
    content round(w*r) x round(h*r), pad_left = round((W - round(w*r)) / 2 - 0.1).
    """
    in_h, in_w = int(size[0]), int(size[1])
    if orig_w <= 0 or orig_h <= 0:
        raise ValueError(f"image size must be positive, got {orig_w}x{orig_h}")
    if mode == "stretch":
        return np.array([orig_w, orig_h, in_w / orig_w, in_h / orig_h, 0.0, 0.0], dtype=np.float64)
    if mode != "letterbox":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    r = min(in_h / orig_h, in_w / orig_w)
    new_w, new_h = int(round(orig_w * r)), int(round(orig_h * r))
    pad_left = int(round((in_w - new_w) / 2 - 0.1))
    pad_top = int(round((in_h - new_h) / 2 - 0.1))
    return np.array([orig_w, orig_h, r, r, pad_left, pad_top], dtype=np.float64)


def content_size(row: np.ndarray) -> tuple[int, int]:
    """(width, height) in input pixels of the resized image content inside the input."""
    return int(round(row[ORIG_W] * row[SCALE_X])), int(round(row[ORIG_H] * row[SCALE_Y]))


def letterbox_image(
    image: np.ndarray, size: tuple[int, int], *, mode: str = "letterbox", pad_value: int = 114
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image into the model input. image (h, w, 3) uint8 -> ((H, W, 3) uint8, row (6,)).

    Bilinear resize of the content, then constant padding (`pad_value`) around it.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) image, got shape {image.shape}")
    orig_h, orig_w = image.shape[:2]
    row = letterbox_row(orig_w, orig_h, size, mode)
    in_h, in_w = int(size[0]), int(size[1])
    new_w, new_h = (in_w, in_h) if mode == "stretch" else content_size(row)
    if (new_w, new_h) != (orig_w, orig_h):
        from PIL import Image      # only where an image is resized: keeps the geometry import light

        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    else:
        resized = image
    out = np.full((in_h, in_w, 3), pad_value, dtype=np.uint8)
    left, top = int(row[PAD_LEFT]), int(row[PAD_TOP])
    out[top : top + new_h, left : left + new_w] = resized
    return out, row


# the old name, for callers in the other half (calib/doctor.py, examples/detector/train.py) until they
# move to letterbox_image; the package attribute `calib.letterbox` is this module again



def input_to_original_xyxy(boxes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Map boxes from input pixels to original-image pixels, clipped to the image.

    boxes (..., 4) xyxy input px; rows (6,) or broadcastable (..., 6) -> (..., 4) xyxy original px.
    """
    rows = np.asarray(rows)
    sx, sy = rows[..., SCALE_X, None], rows[..., SCALE_Y, None]
    px, py = rows[..., PAD_LEFT, None], rows[..., PAD_TOP, None]
    w, h = rows[..., ORIG_W, None], rows[..., ORIG_H, None]
    x1 = np.clip((boxes[..., 0:1] - px) / sx, 0, w)
    y1 = np.clip((boxes[..., 1:2] - py) / sy, 0, h)
    x2 = np.clip((boxes[..., 2:3] - px) / sx, 0, w)
    y2 = np.clip((boxes[..., 3:4] - py) / sy, 0, h)
    return np.concatenate([x1, y1, x2, y2], axis=-1).astype(boxes.dtype, copy=False)


def original_to_input_xyxy(boxes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Inverse of input_to_original_xyxy (no clipping): (..., 4) xyxy original px -> input px."""
    rows = np.asarray(rows)
    scale = np.stack([rows[..., SCALE_X], rows[..., SCALE_Y]] * 2, axis=-1)
    pad = np.stack([rows[..., PAD_LEFT], rows[..., PAD_TOP]] * 2, axis=-1)
    return boxes * scale + pad


def centre_in_content(boxes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """True where a box's centre lies on the image content, not in the padding.

    boxes (..., 4) xyxy input px; rows broadcastable (..., 6) -> (...,) bool. The content spans
    [pad, pad + orig * scale] on each axis, edges included.
    """
    rows = np.asarray(rows)
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    left, top = rows[..., PAD_LEFT], rows[..., PAD_TOP]
    right = left + rows[..., ORIG_W] * rows[..., SCALE_X]
    bottom = top + rows[..., ORIG_H] * rows[..., SCALE_Y]
    return (cx >= left) & (cx <= right) & (cy >= top) & (cy <= bottom)
