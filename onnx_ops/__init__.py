"""The graph half of detcal: recognise the detector head, insert calibration, thresholds,
letterbox masking and NMS as standard ONNX nodes, check the result against the EP tables.

    from onnx_ops import patch_model
    patch_model("yolov8n.onnx", calib.artifact.load_artifact("calibration.json"))  # -> yolov8n.detcal.onnx
"""
from .patch import (PatchResult, PostprocessSpec, build_patched_model, build_postprocess_graph, default_out_path,
                    patch_model)

__all__ = ["patch_model", "build_patched_model", "build_postprocess_graph", "default_out_path", "PatchResult",
           "PostprocessSpec"]
