"""Reading images with Pillow, EXIF orientation honoured.

Every size and pixel array in detcal is of the image as a viewer shows it, i.e. after
``PIL.ImageOps.exif_transpose``; YOLO labels are normalised to that image (as Ultralytics does).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Pillow refuses images over ~179 megapixels (and warns from 89) as possible decompression bombs;
# a validation set's own images (aerial tiles, stitched panoramas) are trusted up to 1 gigapixel,
# about 3 GB decoded, and never make Pillow print a warning of its own
MAX_IMAGE_PIXELS = 1 << 30
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

from .errors import DetcalError

# Ultralytics' IMG_FORMATS (compared lower-case, without the dot).
IMAGE_EXTENSIONS = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"})

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # orientations that rotate by 90 or 270 degrees
# The same table as PIL.ImageOps.exif_transpose, applied without its defensive copy.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 as PIL.ImageOps.exif_transpose reads it; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: treat as upright, as Ultralytics' exif_size does
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


class UnreadableImage(DetcalError):
    """An image file that is missing, truncated or not an image. ``path`` and ``reason`` kept apart."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of the supported image extensions (case-insensitive)."""
    suffix = Path(path).suffix
    return suffix[1:].lower() in IMAGE_EXTENSIONS if suffix else False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image to an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Same result as ``PIL.ImageOps.exif_transpose(Image.open(path)).convert("RGB")``.

    Alpha is dropped, palette/greyscale/CMYK are converted, 16-bit greyscale is scaled to 8 bits
    (as OpenCV does). Only the first frame of multi-frame files (MPO, TIFF) is read.
    Raises UnreadableImage (a DetcalError) naming the file when it is missing, truncated or not an image.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            orientation = _orientation(im)
            if orientation != 1:
                im = im.transpose(_TRANSPOSE[orientation])
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                arr16 = np.asarray(im, dtype=np.int64)
                if im.mode == "I" and arr16.max(initial=0) <= 255:
                    arr8 = np.clip(arr16, 0, 255).astype(np.uint8)
                else:
                    arr8 = np.clip(arr16 >> 8, 0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(arr8[:, :, None], 3, axis=2))
            if im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt files (OSError, SyntaxError, ValueError, ...)
        raise UnreadableImage(p, _reason(exc)) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UnreadableImage(p, f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image after EXIF orientation, read from the header without decoding pixels.

    Raises UnreadableImage (a DetcalError) naming the file when it is missing or not an image.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            w, h = im.size
            orientation = _orientation(im)
    except MemoryError:
        raise
    except Exception as exc:
        raise UnreadableImage(p, _reason(exc)) from None
    if orientation in _SWAPS_AXES:
        w, h = h, w
    return int(w), int(h)
