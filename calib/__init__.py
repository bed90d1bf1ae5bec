"""detcal's fitting half: data, letterbox geometry, the raw model, the numpy reference
post-processing pipeline, matching, calibrators, rejection thresholds, metrics, the artifact.

Library use mirrors the CLI:

    import calib
    result = calib.fit("yolov8n.onnx", "deploy.yaml", out="calibration.json")
    dets = calib.postprocess(raw, "xywh_cls", rows, artifact.calibration, artifact.score_thresholds, artifact.nms)

The public names are loaded on first use (PEP 562), so `import calib` (and `calib.artifact`,
which `onnx_ops` imports) does not pull in scipy, PIL, matplotlib or the data loaders.
"""
from __future__ import annotations

import importlib

from .artifact.version import DETCAL_VERSION as __version__

# public name -> the module (relative to calib) that defines it
_LAZY = {
    "Artifact": "artifact", "load_artifact": "artifact", "map_from_artifact": "artifact",
    "PostprocessConfig": "artifact", "Preprocess": "artifact",
    "box_iou": "boxes", "cxcywh_to_xyxy": "boxes", "xyxy_to_cxcywh": "boxes",
    "Dataset": "data", "load_dataset": "data",
    "DetcalError": "errors",
    "FitOptions": "fitting", "fit": "fitting",
    "input_to_original_xyxy": "letterbox", "letterbox_image": "letterbox", "letterbox_row": "letterbox",
    "batched_nms_xyxy": "nms", "nms_xyxy": "nms",
    "Detections": "pipeline", "pack_fixed": "pipeline", "postprocess": "pipeline",
    "preprocess_image": "preprocess",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'calib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value        # later look-ups skip __getattr__ (this also replaces the submodule calib.fit)
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
