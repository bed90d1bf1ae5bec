"""The pre- and post-processing configs recorded in the artifact (`preprocess` and `nms` blocks).

Both are frozen dataclasses that validate in `__post_init__` and serialise themselves
(`to_artifact` / `from_artifact`): nothing else knows their keys. The image function that
applies a `Preprocess` (`calib.preprocess.preprocess_image`) stays on the fitting side.
"""
from __future__ import annotations

from dataclasses import dataclass

from .constraints import Array, Block, Bool, Int, Optional, Real, Str, check_block

RESIZE_MODES = ("letterbox", "stretch")
PLACEMENTS = ("centre", "top_left", "bottom_right")   # where the letterboxed content sits (YOLOX: top_left); = calib.resize
SCALES = ("div255", "none")                           # pixel / 255 first, or raw 0..255 (YOLOX)
INPUT_DTYPES = ("float32", "float16", "uint8")        # the model's image input (model block; calib.model_input)
INPUT_LAYOUTS = ("NCHW", "NHWC")                      # [B, 3, H, W] | [B, H, W, 3]; absent in older artifacts: NCHW
MAX_DET = 10_000                 # detections per image the artifact may ask for
MAX_PRE_NMS_TOP_K = 100_000


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs. x = (pixel * s - mean) / std, per channel, NCHW float32, with
    s = 1/255 (`scale` div255, mean/std in 0..1 units) or 1 (`scale` none: raw 0..255, mean/std in 0..255 units).
    `placement`: where a letterbox puts the content (centre: Ultralytics; top_left: YOLOX)."""

    resize: str = "letterbox"            # letterbox | stretch
    pad_value: int = 114                 # Ultralytics' grey
    channel_order: str = "RGB"           # RGB | BGR
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)   # in 0..1 units, after /255
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    placement: str = "centre"
    scale: str = "div255"

    # what the `preprocess` block may hold, checked by `check_block` in `from_artifact`
    _artifact_constraints = {
        "resize": Optional(Str(RESIZE_MODES), nullable=False),
        "pad_value": Optional(Int(0, 255), nullable=False),
        "channel_order": Optional(Str(("RGB", "BGR")), nullable=False),
        "placement": Optional(Str(PLACEMENTS), nullable=False),
        "scaling": Optional(Block({
            "kind": Str(("div255", "mean_std", "none")),
            "units": Optional(Str(("0..1", "0..255")), nullable=False),
            "mean": Optional(Array(Real(-1e3, 1e3), length=3), nullable=False),
            "std": Optional(Array(Real(0, 1e3, low_open=True), length=3), nullable=False),
        }), nullable=False),
    }

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need 3 values each, std > 0")

    def to_artifact(self) -> dict:
        plain = tuple(self.mean) == (0.0, 0.0, 0.0) and tuple(self.std) == (1.0, 1.0, 1.0)
        if plain:
            scaling = {"kind": "div255" if self.scale == "div255" else "none"}
        else:
            scaling = {"kind": "mean_std", "mean": list(map(float, self.mean)), "std": list(map(float, self.std))}
            if self.scale == "none":
                scaling["units"] = "0..255"           # (pixel - mean) / std on raw 0..255 values
        out = {
            "resize": self.resize,
            "pad_value": int(self.pad_value),
            "channel_order": self.channel_order,
            "scaling": scaling,
        }
        if self.placement != "centre":
            out["placement"] = self.placement
        return out

    @classmethod
    def from_artifact(cls, d: dict, path: str = "preprocess") -> "Preprocess":
        """The `preprocess` block -> Preprocess; ConstraintError (a ValueError) naming the key."""
        check_block(d, cls._artifact_constraints, path)
        scaling = d.get("scaling", {"kind": "div255"})
        mean = tuple(scaling.get("mean", (0.0, 0.0, 0.0)))
        std = tuple(scaling.get("std", (1.0, 1.0, 1.0)))
        raw = scaling.get("kind") == "none" or scaling.get("units") == "0..255"
        return cls(d.get("resize", "letterbox"), int(d.get("pad_value", 114)), d.get("channel_order", "RGB"), mean, std,
                   d.get("placement", "centre"), "none" if raw else "div255")


@dataclass(frozen=True)
class PostprocessConfig:
    """Knobs of the post-processing pipeline (numpy reference and graph), the artifact's `nms` block."""

    iou_threshold: float = 0.7        # Ultralytics' default
    max_det: int = 300
    pre_nms_top_k: int = 3000         # < 3840, TensorRT's TopK limit
    multi_label: bool = False
    class_aware: bool = True
    mask_padding: bool = True         # drop boxes centred in the letterbox bars

    # what the `nms` block may hold, checked by `check_block` in `from_artifact`
    _artifact_constraints = {
        "iou_threshold": Optional(Real(0, 1), nullable=False),
        "max_det": Optional(Int(1, MAX_DET), nullable=False),
        "pre_nms_top_k": Optional(Int(1, MAX_PRE_NMS_TOP_K), nullable=False),
        "multi_label": Optional(Bool(), nullable=False),
        "class_aware": Optional(Bool(), nullable=False),
        "mask_padding": Optional(Bool(), nullable=False),
    }

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
    def from_artifact(cls, d: dict, path: str = "nms") -> "PostprocessConfig":
        """The `nms` block -> PostprocessConfig; ConstraintError (a ValueError) naming the key."""
        check_block(d, cls._artifact_constraints, path)
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)
