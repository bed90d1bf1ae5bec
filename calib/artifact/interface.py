"""The patched model's interface: its extra input, its outputs, the letterbox row and its metadata.

Inputs:  the source image input, unchanged, plus LETTERBOX_INPUT float32 [B, 6], one letterbox
         row per image (ROW_FIELDS): input_px = orig_px * scale + pad on each axis.
Outputs: PATCHED_OUTPUTS (the EfficientNMS layout): num_dets int32 [B, 1], det_boxes float32
         [B, K, 4] xyxy original px clipped, det_scores float32 [B, K] calibrated, det_classes
         int32 [B, K]; rows at and after num_dets are zero with class -1; K = max_det.
Metadata: `PatchedMetadata`, written by `onnx_ops.patch` (`to_metadata_props`) and read by
         `calib.evaluate` (`from_metadata_props`); nothing else knows its keys.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .version import DETCAL_VERSION

# head layouts the artifact may name (decoding lives in calib.layouts)
LAYOUTS = ("xywh_cls", "xywh_obj_cls", "end2end")

LETTERBOX_INPUT = "letterbox"
PATCHED_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")

# the letterbox row: float (6,), the one definition of its columns
ROW_FIELDS = ("orig_w", "orig_h", "scale_x", "scale_y", "pad_left", "pad_top")
ORIG_W, ORIG_H, SCALE_X, SCALE_Y, PAD_LEFT, PAD_TOP = range(len(ROW_FIELDS))

METADATA_KEY = "detcal"                 # JSON summary (PatchedMetadata)
_FLAT_KEYS = ("detcal_version", "detcal_source_sha256", "detcal_calibrator")   # convenience copies


def is_patched_metadata(metadata: dict) -> bool:
    """True when an ONNX model's metadata_props ({key: value}) mark it as written by `detcal patch`."""
    return METADATA_KEY in metadata or "detcal_version" in metadata


@dataclass(frozen=True)
class PatchedMetadata:
    """The patched model's `detcal` metadata entry. Fields are None where a (foreign or older)
    entry lacks them; `from_metadata_props` only insists on a JSON object."""

    source_sha256: str | None = None
    layout: str | None = None
    num_classes: int | None = None
    calibrator: str | None = None
    calibration_in_logit_space: bool | None = None
    thresholds: list | None = None          # (C,) calibrated score thresholds
    nms: dict | None = None                 # PostprocessConfig.to_artifact()
    preprocess: dict | None = None          # Preprocess.to_artifact()
    certified_bound: float | None = None
    detcal_version: str = DETCAL_VERSION
    raw: dict = field(default_factory=dict, compare=False, repr=False)   # the entry as read

    def to_metadata_props(self) -> dict[str, str]:
        """{metadata key: string value} to add to the patched model's metadata_props."""
        k = (self.nms or {}).get("max_det", "K")
        summary = {
            "detcal_version": self.detcal_version,
            "source_sha256": self.source_sha256,
            "layout": self.layout,
            "num_classes": self.num_classes,
            "calibrator": self.calibrator,
            "calibration_in_logit_space": self.calibration_in_logit_space,
            "thresholds": self.thresholds,
            "nms": self.nms,
            "inputs": {LETTERBOX_INPUT: "float32 [B, 6] " + ", ".join(ROW_FIELDS)},
            "outputs": {"num_dets": "int32 [B, 1]", "det_boxes": f"float32 [B, {k}, 4] xyxy original px",
                        "det_scores": f"float32 [B, {k}] calibrated", "det_classes": f"int32 [B, {k}]"},
            "preprocess": self.preprocess,
            "certified_bound": self.certified_bound,
        }
        flat = (self.detcal_version, self.source_sha256, self.calibrator)
        return {METADATA_KEY: json.dumps(summary, sort_keys=True),
                **{key: str(v) for key, v in zip(_FLAT_KEYS, flat)}}

    @classmethod
    def from_metadata_props(cls, metadata: dict, source: str) -> "PatchedMetadata":
        """metadata_props ({key: value}) -> PatchedMetadata. Raises ValueError naming `source` when
        the `detcal` entry is missing or not a JSON object (callers turn it into a DetcalError)."""
        if METADATA_KEY not in metadata:
            raise KeyError(f"{source}: no '{METADATA_KEY}' metadata entry")
        try:
            d = json.loads(metadata[METADATA_KEY])
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise ValueError(f"{source}: the '{METADATA_KEY}' metadata entry is not valid JSON ({exc})") from None

        def typed(key, types):
            v = d.get(key)
            return v if isinstance(v, types) and not (types is int and isinstance(v, bool)) else None

        return cls(
            source_sha256=typed("source_sha256", str),
            layout=typed("layout", str),
            num_classes=typed("num_classes", int),
            calibrator=typed("calibrator", str),
            calibration_in_logit_space=typed("calibration_in_logit_space", bool),
            thresholds=typed("thresholds", list),
            nms=typed("nms", dict),
            preprocess=typed("preprocess", dict),
            certified_bound=typed("certified_bound", (int, float)),
            detcal_version=typed("detcal_version", str) or "",
            raw=d,
        )
