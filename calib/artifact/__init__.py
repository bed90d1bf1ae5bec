"""The artifact: the contract between the fitting side (`calib`) and the graph side (`onnx_ops`).

Both import it; nothing else defines what is here. It imports only numpy and the standard
library (plus calib's tiny errors/atomic/jsonable helpers), so `onnx_ops` stays light.

    schema           Artifact, load_artifact, FORMAT, FORMAT_VERSION   (calibration.json)
    version          DETCAL_VERSION, the one version string of the project
    calibration_map  AffineLogitMap, IsotonicMap, map_from_artifact, ...  (raw -> calibrated score)
    configs          Preprocess, PostprocessConfig                        (`preprocess`, `nms` blocks)
    interface        the patched model: LETTERBOX_INPUT, PATCHED_OUTPUTS, ROW_FIELDS and the
                     column indices, LAYOUTS, PatchedMetadata (one writer, one reader)
"""
from .calibration_map import (AFFINE_KINDS, EPS, ISOTONIC_KIND, KINDS, MAX_KNOTS, AffineLogitMap, CalibrationMap,
                              IsotonicMap, identity_map, logit, map_from_artifact, sigmoid)
from .box_map import BOX_KIND, BoxPlattMap
from .configs import RESIZE_MODES, PostprocessConfig, Preprocess
from .interface import (DET_MASKS_COEFFS, DECODED_LAYOUTS, HEAD_LAYOUTS, LAYOUTS, LETTERBOX_INPUT, METADATA_KEY, ORIG_H, ORIG_W, PAD_LEFT, PAD_TOP, PATCHED_OUTPUTS,
                        ROW_FIELDS, SCALE_X, SCALE_Y, PatchedMetadata, is_patched_metadata)
from .schema import FORMAT, FORMAT_VERSION, Artifact, load_artifact
from .version import DETCAL_VERSION

__all__ = [
    "AFFINE_KINDS", "EPS", "ISOTONIC_KIND", "KINDS", "MAX_KNOTS", "AffineLogitMap", "CalibrationMap", "IsotonicMap",
    "identity_map", "logit", "map_from_artifact", "sigmoid", "RESIZE_MODES", "PostprocessConfig", "Preprocess",
    "DET_MASKS_COEFFS", "DECODED_LAYOUTS", "HEAD_LAYOUTS", "LAYOUTS", "LETTERBOX_INPUT", "METADATA_KEY", "ORIG_H", "ORIG_W", "PAD_LEFT", "PAD_TOP", "PATCHED_OUTPUTS",
    "ROW_FIELDS", "SCALE_X", "SCALE_Y", "PatchedMetadata", "is_patched_metadata", "FORMAT", "FORMAT_VERSION",
    "Artifact", "load_artifact", "DETCAL_VERSION", "BOX_KIND", "BoxPlattMap",
]
