"""detcal's fitting half: data, letterbox geometry, the raw model, the numpy reference
post-processing pipeline, matching, calibrators, rejection thresholds, metrics, the artifact.

Library use mirrors the CLI:

    import calib
    result = calib.fit("yolov8n.onnx", "deploy.yaml", out="calibration.json")
    dets = calib.postprocess(raw, "xywh_cls", rows, artifact.calibration, artifact.score_thresholds, artifact.nms)
"""
from .artifact import Artifact, load_artifact
from .boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from .calibration_map import map_from_artifact
from .data import Dataset, load_dataset
from .errors import DetcalError
from .fitting import FitOptions, fit
from .letterbox import input_to_original_xyxy, letterbox, letterbox_row
from .nms import batched_nms_xyxy, nms_xyxy
from .pipeline import Detections, PostprocessConfig, pack_fixed, postprocess
from .preprocess import Preprocess, preprocess_image

__version__ = "0.1.0"
__all__ = [
    "Artifact", "load_artifact", "box_iou", "cxcywh_to_xyxy", "xyxy_to_cxcywh", "map_from_artifact",
    "Dataset", "load_dataset", "DetcalError", "FitOptions", "fit", "input_to_original_xyxy", "letterbox",
    "letterbox_row", "batched_nms_xyxy", "nms_xyxy", "Detections", "PostprocessConfig", "pack_fixed",
    "postprocess", "Preprocess", "preprocess_image", "__version__",
]
