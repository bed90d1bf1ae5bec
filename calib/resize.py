"""The one definition of the resize: numpy twin of what the graph does with ONNX `Resize`.

    letterbox_resize(image_hwc_uint8, size_hw, *, mode, placement, pad_value) -> (canvas_hwc float32, row)
    to_model_input(canvas_hwc, channel_order, mean, std) -> (3, H, W) float32

Definition (the embedded preprocessing, `onnx_ops.preprocess_graph`, builds the same steps):

- Interpolation: ONNX `Resize` with mode="linear", coordinate_transformation_mode="half_pixel",
  antialias off, output size given by `sizes`. For an output pixel x of an axis resized from
  n_in to n_out: scale = float32(n_out) / float32(n_in), x_in = (x + 0.5) / scale - 0.5, clamped
  to [0, n_in - 1]; value = (1 - f) * img[floor(x_in)] + f * img[min(floor(x_in) + 1, n_in - 1)]
  with f = x_in - floor(x_in), separably on rows and columns, in float32.
  half_pixel aligns pixel centres (as OpenCV's INTER_LINEAR and Pillow do), unlike asymmetric
  (shifts the image by half a pixel) or align_corners (stretches by one pixel). Antialias is off
  because TensorRT's parser rejects it and OpenCV's INTER_LINEAR, the resize most deployment code
  uses, has none either; for strong downscaling this aliases where Pillow's filter would blur.
- Values stay float32 (no rounding to uint8): the resized canvas is the bilinear mix of the
  uint8 pixels, so it lies in [0, 255] without clamping, and the graph never rounds either.
- Scaled size (letterbox): r = min(float32(H) / float32(h), float32(W) / float32(w)) in float32,
  new_w = max(1, rint(float32(w) * r)), new_h likewise (rint: round half to even, ONNX `Round`).
  This is Ultralytics' round(w * r) except where w * r lies within float32 rounding of a tie
  (and a side that would round to 0 px is 1 px). The letterbox row keeps Ultralytics' float64
  r (scale_x == scale_y == r), as calib.letterbox.letterbox_row defines it; the graph's float32
  row is that value rounded to float32.
- Placement of the content in the (H, W) input: "centre" (pad_left = (W - new_w) // 2, pad_top
  likewise: Ultralytics' round(d / 2 - 0.1)), "top_left" (no padding before) or "bottom_right"
  (all padding before). The rest is `pad_value` (in 0..255 units, before scaling).
- Stretch: resize to (H, W) exactly; row (w, h, W / w, H / h, 0, 0) with float32 divisions.
- Model input: channel order (input images are RGB; BGR models get the channels reversed),
  x * float32(1 / 255), then (x - mean) / std per channel when mean/std are not (0, 1),
  then NCHW: exactly calib.preprocess.to_input_tensor's float32 arithmetic.
"""
from __future__ import annotations

import numpy as np

from .artifact.configs import RESIZE_MODES
from .artifact.interface import PAD_LEFT, PAD_TOP

COORDINATE_TRANSFORMATION_MODE = "half_pixel"
PLACEMENTS = ("centre", "top_left", "bottom_right")
CHANNEL_ORDERS = ("RGB", "BGR")
F32 = np.float32


def scale_ratio(orig_w: int, orig_h: int, size_hw: tuple[int, int]) -> np.float32:
    """r = min(H / h, W / w) in float32, the letterbox scale."""
    in_h, in_w = int(size_hw[0]), int(size_hw[1])
    return min(F32(in_h) / F32(orig_h), F32(in_w) / F32(orig_w))


def scaled_size(orig_w: int, orig_h: int, size_hw: tuple[int, int]) -> tuple[int, int]:
    """(new_w, new_h) of the letterboxed content: max(1, rint(float32(side) * r))."""
    r = scale_ratio(orig_w, orig_h, size_hw)
    new_w = max(1, int(np.rint(F32(orig_w) * r)))
    new_h = max(1, int(np.rint(F32(orig_h) * r)))
    return new_w, new_h


def placement_offsets(in_w: int, in_h: int, new_w: int, new_h: int, placement: str = "centre") -> tuple[int, int]:
    """(pad_left, pad_top) of new_w x new_h content placed in an in_w x in_h input."""
    dw, dh = in_w - new_w, in_h - new_h
    if placement == "centre":
        return dw // 2, dh // 2
    if placement == "top_left":
        return 0, 0
    if placement == "bottom_right":
        return dw, dh
    raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


def resize_row(orig_w: int, orig_h: int, size_hw: tuple[int, int], mode: str = "letterbox",
               placement: str = "centre") -> np.ndarray:
    """The letterbox row (orig_w, orig_h, scale_x, scale_y, pad_left, pad_top) float64 (6,).

    input_px = orig_px * scale + pad, as calib.letterbox defines it. The scales are float64
    (Ultralytics' r); the graph computes them in float32, i.e. this value rounded to float32
    (the patched model's `letterbox` rows are float32 anyway). Content size and padding are the
    float32 ones of scaled_size, exactly as in the graph.
    """
    in_h, in_w = int(size_hw[0]), int(size_hw[1])
    if orig_w <= 0 or orig_h <= 0:
        raise ValueError(f"image size must be positive, got {orig_w}x{orig_h}")
    if in_w <= 0 or in_h <= 0:
        raise ValueError(f"input size must be positive, got {in_h}x{in_w} (HxW)")
    if mode == "stretch":
        return np.array([orig_w, orig_h, in_w / orig_w, in_h / orig_h, 0, 0], np.float64)
    if mode != "letterbox":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    r = min(in_h / orig_h, in_w / orig_w)        # float64 (Ultralytics'); the sizes use float32
    new_w, new_h = scaled_size(orig_w, orig_h, size_hw)
    left, top = placement_offsets(in_w, in_h, new_w, new_h, placement)
    return np.array([orig_w, orig_h, r, r, left, top], np.float64)


def _axis_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 (n_out,) int and weights f (n_out,) float32 of half_pixel linear."""
    scale = F32(n_out) / F32(n_in)
    x = (np.arange(n_out, dtype=F32) + F32(0.5)) / scale - F32(0.5)
    x = np.clip(x, F32(0), F32(n_in - 1))
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (x - i0.astype(F32)).astype(F32)


def resize_linear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """ONNX Resize (linear, half_pixel, no antialias) of (h, w, C) -> (out_h, out_w, C) float32."""
    img = np.asarray(image).astype(F32, copy=False)
    h, w = img.shape[:2]
    if (out_h, out_w) == (h, w):
        return img.copy()
    y0, y1, fy = _axis_taps(h, out_h)
    x0, x1, fx = _axis_taps(w, out_w)
    fy = fy[:, None, None]
    rows = img[y0] * (F32(1) - fy) + img[y1] * fy
    fx = fx[None, :, None]
    return rows[:, x0] * (F32(1) - fx) + rows[:, x1] * fx


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """An (h, w, 3) uint8 array (or float32 in 0..255 units, e.g. a canvas letterboxed again),
    or ValueError naming the problem."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected an (h, w, 3) image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.float32):
        raise ValueError(f"{what}: expected uint8 (or float32 0..255) pixels, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what}: empty image {image.shape}")
    return image


def letterbox_resize(image: np.ndarray, size_hw: tuple[int, int], *, mode: str = "letterbox",
                     placement: str = "centre", pad_value: int = 114) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) uint8 -> ((H, W, 3) float32 canvas in 0..255 units, letterbox row float64 (6,)).

    A float32 image (0..255 units) is resized the same way (the graph's input is uint8 only).
    """
    image = check_image(image)
    if not 0 <= int(pad_value) <= 255:
        raise ValueError(f"pad_value must be in 0..255, got {pad_value}")
    orig_h, orig_w = image.shape[:2]
    in_h, in_w = int(size_hw[0]), int(size_hw[1])
    row = resize_row(orig_w, orig_h, (in_h, in_w), mode, placement)
    if mode == "stretch":
        return resize_linear(image, in_h, in_w), row
    new_w, new_h = scaled_size(orig_w, orig_h, (in_h, in_w))
    canvas = np.full((in_h, in_w, 3), F32(pad_value), dtype=F32)
    left, top = int(row[PAD_LEFT]), int(row[PAD_TOP])
    canvas[top: top + new_h, left: left + new_w] = resize_linear(image, new_h, new_w)
    return canvas, row


def to_model_input(canvas_hwc: np.ndarray, channel_order: str = "RGB", mean=(0.0, 0.0, 0.0),
                   std=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(H, W, 3) RGB pixels (0..255, any dtype) -> (3, H, W) float32 model input.

    x = (pixel * float32(1/255) - mean) / std per channel in the model's channel order; the
    Sub/Div only where mean/std differ from (0, 1) (calib.preprocess.to_input_tensor's arithmetic).
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    x = canvas_hwc[..., ::-1] if channel_order == "BGR" else canvas_hwc
    x = x.astype(F32) * F32(1 / 255)
    if tuple(mean) != (0.0, 0.0, 0.0) or tuple(std) != (1.0, 1.0, 1.0):
        x = (x - np.asarray(mean, F32)) / np.asarray(std, F32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
