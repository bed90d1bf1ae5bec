"""Deployment preprocessing: resize geometry, channel order and pixel scaling, recorded in the artifact."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .letterbox import RESIZE_MODES, letterbox


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs. x = (pixel / 255 - mean) / std, per channel, NCHW float32."""

    resize: str = "letterbox"            # letterbox | stretch
    pad_value: int = 114                 # Ultralytics' grey
    channel_order: str = "RGB"           # RGB | BGR
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)   # in 0..1 units, after /255
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need 3 values each, std > 0")

    def to_artifact(self) -> dict:
        scaling = (
            {"kind": "div255"}
            if tuple(self.mean) == (0.0, 0.0, 0.0) and tuple(self.std) == (1.0, 1.0, 1.0)
            else {"kind": "mean_std", "mean": list(map(float, self.mean)), "std": list(map(float, self.std))}
        )
        return {
            "resize": self.resize,
            "pad_value": int(self.pad_value),
            "channel_order": self.channel_order,
            "scaling": scaling,
        }

    @classmethod
    def from_artifact(cls, d: dict) -> "Preprocess":
        if not isinstance(d, dict):
            raise ValueError(f"preprocess block must be a JSON object, got {type(d).__name__}")
        scaling = d.get("scaling", {"kind": "div255"})
        if not isinstance(scaling, dict) or scaling.get("kind") not in ("div255", "mean_std"):
            raise ValueError(f"preprocess.scaling must be {{\"kind\": \"div255\"}} or "
                             f"{{\"kind\": \"mean_std\", \"mean\": [3], \"std\": [3]}}, got {scaling!r}")
        mean = tuple(scaling.get("mean", (0.0, 0.0, 0.0)))
        std = tuple(scaling.get("std", (1.0, 1.0, 1.0)))
        return cls(d.get("resize", "letterbox"), int(d.get("pad_value", 114)), d.get("channel_order", "RGB"), mean, std)


def to_input_tensor(image_hwc: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in the model's channel order and scaling."""
    x = image_hwc[..., ::-1] if pre.channel_order == "BGR" else image_hwc
    x = x.astype(np.float32) * np.float32(1 / 255)
    if pre.mean != (0.0, 0.0, 0.0) or pre.std != (1.0, 1.0, 1.0):
        x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_image(image_rgb: np.ndarray, size: tuple[int, int], pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) uint8 RGB -> ((3, H, W) float32 model input, letterbox row (6,))."""
    resized, row = letterbox(image_rgb, size, mode=pre.resize, pad_value=pre.pad_value)
    return to_input_tensor(resized, pre), row
