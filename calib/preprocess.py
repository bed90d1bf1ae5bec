"""Applying the deployment preprocessing (`calib.artifact.Preprocess`, recorded in the artifact) to images."""
from __future__ import annotations

import numpy as np

from .artifact.configs import Preprocess
from .letterbox import letterbox_image
from .resize import to_model_input


def to_input_tensor(image_hwc: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(H, W, 3) RGB pixels (uint8, or float32 0..255 from letterbox_image) -> (3, H, W) float32
    in the model's channel order and scaling (calib.resize.to_model_input)."""
    return to_model_input(image_hwc, pre.channel_order, pre.mean, pre.std)


def preprocess_image(image_rgb: np.ndarray, size: tuple[int, int], pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) uint8 RGB -> ((3, H, W) float32 model input, letterbox row (6,)); the same
    arithmetic as the patched model's embedded preprocessing (calib.resize)."""
    resized, row = letterbox_image(image_rgb, size, mode=pre.resize, pad_value=pre.pad_value)
    return to_input_tensor(resized, pre), row
