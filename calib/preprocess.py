"""Applying the deployment preprocessing (`calib.artifact.Preprocess`, recorded in the artifact) to images."""
from __future__ import annotations

import numpy as np

from .artifact.configs import Preprocess
from .letterbox import letterbox_image


def to_input_tensor(image_hwc: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in the model's channel order and scaling."""
    x = image_hwc[..., ::-1] if pre.channel_order == "BGR" else image_hwc
    x = x.astype(np.float32) * np.float32(1 / 255)
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_image(image_rgb: np.ndarray, size: tuple[int, int], pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) uint8 RGB -> ((3, H, W) float32 model input, letterbox row (6,))."""
    resized, row = letterbox_image(image_rgb, size, mode=pre.resize, pad_value=pre.pad_value)
    return to_input_tensor(resized, pre), row
