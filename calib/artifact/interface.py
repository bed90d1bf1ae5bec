"""The patched model's interface: its extra input, its outputs, the letterbox row and its metadata.

Inputs:  the source image input, unchanged, plus LETTERBOX_INPUT float32 [B, 6], one letterbox
         row per image (ROW_FIELDS): input_px = orig_px * scale + pad on each axis.
Outputs: PATCHED_OUTPUTS (the EfficientNMS layout): num_dets int32 [B, 1], det_boxes float32
         [B, K, 4] xyxy original px clipped, det_scores float32 [B, K] calibrated, det_classes
         int32 [B, K]; rows at and after num_dets are zero with class -1; K = max_det.
         Seg heads (Ultralytics -seg) add DET_MASKS_COEFFS float32 [B, K, M] (the kept detections'
         mask coefficients, in det_boxes' order, zero at and after num_dets) and keep the source's
         prototypes output [B, M, H/4, W/4] unchanged under its own name (PatchedMetadata.masks).
Metadata: `PatchedMetadata`, written by `onnx_ops.patch` (`to_metadata_props`) and read by
         `calib.evaluate` (`from_metadata_props`); nothing else knows its keys.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .version import DETCAL_VERSION

# head layouts the artifact may name (decoding lives in calib.layouts; the families whose export
# leaves the box decode out, HEAD_LAYOUTS, in calib.head_decoders and onnx_ops.decode_graph)
DECODED_LAYOUTS = ("xywh_cls", "xywh_obj_cls", "end2end")
HEAD_LAYOUTS = ("yolox_raw", "gfl_multilevel", "detr")
LAYOUTS = DECODED_LAYOUTS + HEAD_LAYOUTS

LETTERBOX_INPUT = "letterbox"
PATCHED_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
DET_MASKS_COEFFS = "det_masks_coeffs"   # seg heads only, beside the source's prototypes output

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
    inputs: dict | None = None              # {name: description} beside the source's; None: `letterbox`
    static_shapes: bool | None = None      # the fixed-shape inserted graph (TensorRT), else the default
    masks: dict | None = None               # seg heads: {"mask_coeffs": M, "prototypes": output name}
    detcal_version: str = DETCAL_VERSION
    raw: dict = field(default_factory=dict, compare=False, repr=False)   # the entry as read

    def to_metadata_props(self) -> dict[str, str]:
        """{metadata key: string value} to add to the patched model's metadata_props."""
        k = (self.nms or {}).get("max_det", "K")
        outputs = {"num_dets": "int32 [B, 1]", "det_boxes": f"float32 [B, {k}, 4] xyxy original px",
                   "det_scores": f"float32 [B, {k}] calibrated", "det_classes": f"int32 [B, {k}]"}
        if self.masks:
            m = self.masks.get("mask_coeffs", "M")
            outputs[DET_MASKS_COEFFS] = f"float32 [B, {k}, {m}] mask coefficients of the detections"
            outputs[str(self.masks.get("prototypes"))] = f"float32 [B, {m}, H/4, W/4] mask prototypes, unchanged"
        summary = {
            "detcal_version": self.detcal_version,
            "source_sha256": self.source_sha256,
            "layout": self.layout,
            "num_classes": self.num_classes,
            "calibrator": self.calibrator,
            "calibration_in_logit_space": self.calibration_in_logit_space,
            "thresholds": self.thresholds,
            "nms": self.nms,
            "inputs": self.inputs or {LETTERBOX_INPUT: "float32 [B, 6] " + ", ".join(ROW_FIELDS)},
            "outputs": outputs,
            "preprocess": self.preprocess,
            "certified_bound": self.certified_bound,
            "static_shapes": self.static_shapes,
            **({"masks": self.masks} if self.masks else {}),
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
            static_shapes=typed("static_shapes", bool),
            masks=typed("masks", dict),
            detcal_version=typed("detcal_version", str) or "",
            raw=d,
        )
