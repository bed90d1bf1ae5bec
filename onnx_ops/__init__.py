"""The graph half of detcal: recognise the detector head, insert calibration, thresholds,
letterbox masking and NMS as standard ONNX nodes, check the result against the EP tables.

    from onnx_ops import patch_model
    patch_model("yolov8n.onnx", calib.artifact.load_artifact("calibration.json"))  # -> yolov8n.detcal.onnx

The public names are loaded on first use (PEP 562); onnx_ops imports only the light parts of
calib (the artifact contract, model_info, errors, atomic), never scipy, PIL or matplotlib.
"""
from __future__ import annotations

import importlib

_LAZY = {name: "patch" for name in ("patch_model", "build_patched_model", "build_postprocess_graph",
                                    "default_out_path", "PatchResult", "PostprocessSpec")}

__all__ = list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnx_ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
