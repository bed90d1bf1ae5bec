"""The pre- and post-processing configs recorded in the artifact (`preprocess` and `nms` blocks).

Both are frozen dataclasses that validate in `__post_init__` and serialise themselves
(`to_artifact` / `from_artifact`): nothing else knows their keys. The image function that
applies a `Preprocess` (`calib.preprocess.preprocess_image`) stays on the fitting side.
"""
from __future__ import annotations

from dataclasses import dataclass

RESIZE_MODES = ("letterbox", "stretch")


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


@dataclass(frozen=True)
class PostprocessConfig:
    """Knobs of the post-processing pipeline (numpy reference and graph), the artifact's `nms` block."""

    iou_threshold: float = 0.7        # Ultralytics' default
    max_det: int = 300
    pre_nms_top_k: int = 3000         # < 3840, TensorRT's TopK limit
    multi_label: bool = False
    class_aware: bool = True
    mask_padding: bool = True         # drop boxes centred in the letterbox bars

    def __post_init__(self):
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.max_det < 1 or self.pre_nms_top_k < 1:
            raise ValueError("max_det and pre_nms_top_k must be >= 1")

    def to_artifact(self) -> dict:
        return {
            "iou_threshold": float(self.iou_threshold),
            "max_det": int(self.max_det),
            "pre_nms_top_k": int(self.pre_nms_top_k),
            "multi_label": bool(self.multi_label),
            "class_aware": bool(self.class_aware),
            "mask_padding": bool(self.mask_padding),
        }

    @classmethod
    def from_artifact(cls, d: dict) -> "PostprocessConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)
