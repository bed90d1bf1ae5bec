"""Which graph builds the threshold -> calibrate -> best-class steps for a head: one named choice.

`choose_calibration_variant` decides; `candidate_key` builds the chosen variant. All variants
compute the same thing as `calib.pipeline` (threshold on raw scores, calibrate, best class),
in the order that is cheapest for the head, the map and the thresholds at hand.
"""
from __future__ import annotations

import enum

import numpy as np

from calib.artifact import HEAD_LAYOUTS, BoxPlattMap, CalibrationMap, IsotonicMap, PostprocessConfig

from . import box_calibration, steps
from .graph_builder import GraphBuilder
from .graph_calibration import class_shape
from .head import Head


BOXES_FIRST_LAYOUTS = ("xywh_cls", "xywh_obj_cls", *HEAD_LAYOUTS)   # the decoded multi-output heads too
# From this many classes on, single-label dense heads take the boxes-first route. With the margin a
# MatMul (onnx_ops.box_select) it wins at every class count measured (benchmarks/README.md 4c: real
# YOLOv8n rows cut to C = 1, 2, 3, 5 classes, 0.61-0.69x the dense steps at batch 1; the project's
# 5-class detectors 0.5-0.8x); it was 16 while the compaction was about 30 nodes.
BOXES_FIRST_MIN_CLASSES = 1
# Box-aware maps take the boxes-first route only where their lowest raw prefilter is at least this: the
# margin weighs a class's scores by 1 / its prefilter, and below it nearly every box gets through, so
# gathering them all costs more than the dense prefilter (a random map of the tests' artifact_factory on
# the real YOLOv8n heads, batch 1, thresholds putting the lowest prefilter at 0.1 / 0.01 / 0.001: 1.06 /
# 1.32 / 1.92 ms boxes first against 3.47 / 3.53 / 3.56 dense; at 2.5e-6: 6.4 against 4.3 ms; measured
# with the plain sum against the lowest prefilter, which lets more boxes through than the weighted one).
BOX_AWARE_MIN_PREFILTER = 1e-3


class Variant(enum.Enum):
    """How the dense scores [B, C, N] | [B, N, C] become one key per candidate.

    BOXES_FIRST       single-label dense heads (xywh_cls, xywh_obj_cls, and yolox_raw / gfl_multilevel /
                      detr after their in-graph decode; the default): one read of the N x C
                      scores, a MatMul summing each box's class scores / their thresholds into [B, 1, N]
                      (a superset of the survivors: probabilities are >= 0), the candidate boxes compacted in
                      ascending index (TopK by rows of < 3840 boxes for a static N, else CumSum,
                      ScatterElements, Slice), then calibrate / threshold / best class on those boxes only
                      ([B, M, C]); no NonZero (onnx_ops.box_select). Data-dependent shapes: M, and
                      the pre-NMS TopK's K (bounded by K1).
    SPARSE            end2end heads ([B, K, 6], one class per candidate already): threshold and
                      calibrate the K candidates (per-class constants gathered by class).
    UNIFORM_IDENTITY  identity map, one finite threshold for all classes, single-label: the best
                      raw class per box first (ArgMax), then one threshold test per box - if the best
                      class does not pass, no class does. No mask over N x C.
    LOGIT_SPACE       the head ends in Sigmoid(logits) (sigmoid_front), logit-affine map,
                      single-label: calibrate the logits (a * z + b, exact), threshold with the raw
                      probabilities, choose the class on the calibrated logit, Sigmoid per box only.
    SURVIVORS_ONLY    multi-label, isotonic maps, or logit-affine maps on probability heads with some
                      finite threshold: threshold the raw scores first (NonZero), calibrate only the M
                      survivors, scatter them into a NEG-filled key (data-dependent shape).
    DENSE             everything else (identity maps, or no threshold at all): calibrate every
                      score, then the threshold penalty over N x C; no data-dependent shape.
    BOX_AWARE         box-aware maps (platt_box), any head: the threshold is per candidate
                      (onnx_ops.box_calibration): raw prefilter (NonZero), the calibrated logit of
                      the M prefiltered candidates, bit-exact, as the key; Sigmoid after NMS.
    BOX_AWARE_ALL_PAIRS  box-aware maps in the fixed-shape graph (TensorRT): BOX_AWARE's calibrated logit for
                      every (box, class) pair, masked instead of compacted (no NonZero); Sigmoid after NMS.
    BOX_AWARE_BOXES_FIRST  box-aware maps on single-label dense heads whose lowest raw prefilter is at least
                      BOX_AWARE_MIN_PREFILTER (the default there): BOXES_FIRST's
                      margin (weighted by the raw prefilters) and compaction, then BOX_AWARE's
                      prefilter and calibrated logit on the [B, M, C] slots only (its NonZero over
                      M x C instead of N x C); Sigmoid after NMS.
    """

    BOXES_FIRST = "boxes_first"
    SPARSE = "sparse"
    UNIFORM_IDENTITY = "uniform_identity"
    LOGIT_SPACE = "logit_space"
    SURVIVORS_ONLY = "survivors_only"
    DENSE = "dense"
    BOX_AWARE = "box_aware"
    BOX_AWARE_BOXES_FIRST = "box_aware_boxes_first"
    BOX_AWARE_ALL_PAIRS = "box_aware_all_pairs"


BOXES_FIRST_VARIANTS = (Variant.BOXES_FIRST, Variant.BOX_AWARE_BOXES_FIRST)   # the candidates from box_select
BOX_AWARE_VARIANTS = (Variant.BOX_AWARE, Variant.BOX_AWARE_BOXES_FIRST,     # key = calibrated logit, Sigmoid after NMS
                      Variant.BOX_AWARE_ALL_PAIRS)


def choose_calibration_variant(head: Head, cmap: CalibrationMap, cfg: PostprocessConfig,
                               raw_thresholds: np.ndarray, static_shapes: bool = False) -> Variant:
    """The variant for this head, map, config and raw thresholds (C,) float32 (see Variant).

    static_shapes: the fixed-shape graph (TensorRT): never BOXES_FIRST or SURVIVORS_ONLY (their
    compaction has data-dependent shapes), DENSE instead. Single-label heads never get
    SURVIVORS_ONLY (NonZero over all N x C): BOXES_FIRST (from BOXES_FIRST_MIN_CLASSES classes)."""
    multi = cfg.multi_label
    boxes_first = (not static_shapes and not multi and head.layout in BOXES_FIRST_LAYOUTS
                   and head.num_classes >= BOXES_FIRST_MIN_CLASSES)
    if isinstance(cmap, BoxPlattMap):   # per-candidate thresholds; its prefilter compacts (data-dependent shape)
        if static_shapes:
            return Variant.BOX_AWARE_ALL_PAIRS
        tight = bool(np.all(np.asarray(raw_thresholds) >= BOX_AWARE_MIN_PREFILTER))   # raw_thresholds: the prefilter
        return Variant.BOX_AWARE_BOXES_FIRST if boxes_first and tight else Variant.BOX_AWARE
    if head.layout == "end2end":
        return Variant.SPARSE
    if boxes_first:
        return Variant.BOXES_FIRST
    rthr = raw_thresholds
    isotonic = isinstance(cmap, IsotonicMap)
    identity = not isotonic and cmap.is_identity
    if not multi and identity and bool(np.all(rthr == rthr[0])) and rthr[0] != -np.inf:
        return Variant.UNIFORM_IDENTITY
    if head.sigmoid_front and not multi and not isotonic and not identity:
        return Variant.LOGIT_SPACE
    # NonZero over [B, N, C] (SURVIVORS_ONLY) for multi-label only; never in the fixed-shape graph
    if not static_shapes and multi and (isotonic or (not head.sigmoid_front and not identity
                                                     and not np.all(rthr == -np.inf))):
        return Variant.SURVIVORS_ONLY
    return Variant.DENSE


def candidate_key(b: GraphBuilder, variant: Variant, decoded, cmap: CalibrationMap, raw_thresholds: np.ndarray,
                  multi_label: bool, thresholds: np.ndarray | None = None) -> tuple[str, str | None]:
    """Decoded head -> (key, class): key [B, N] (or [B, N * C] box-major for multi_label), the
    calibrated score of each candidate or about NEG where it does not survive; class [B, N] int64,
    None for multi_label (the class is then the flat index mod C). BOX_AWARE: the key is the
    calibrated logit, and it needs the calibrated `thresholds` (C,)."""
    if variant in (Variant.BOX_AWARE, Variant.BOX_AWARE_ALL_PAIRS):
        return box_calibration.threshold_calibrate_box(b, decoded, cmap, thresholds, multi_label,
                                                       all_pairs=variant is Variant.BOX_AWARE_ALL_PAIRS)
    rthr = raw_thresholds
    if variant is Variant.SPARSE:
        return steps.threshold_sparse(b, decoded, cmap, rthr)
    d, C = decoded, rthr.size
    if variant is Variant.UNIFORM_IDENTITY:
        return steps.select_best_class_uniform_identity(b, d.probs, float(rthr[0]), d.class_axis)
    if variant is Variant.LOGIT_SPACE:
        z = steps.calibrate_logits(b, d, cmap, C)
        key = steps.threshold(b, d.probs, z, rthr, class_shape(C, d.class_axis))
        best_z, cls = steps.select_best_class(b, key, d.class_axis)
        return steps.calibrated_box_score(b, best_z), cls
    if variant is Variant.SURVIVORS_ONLY:
        key = steps.threshold_then_calibrate(b, d.probs, cmap, rthr, d.class_axis)
    else:
        key = steps.threshold(b, d.probs, steps.calibrate(b, d, cmap, C), rthr, class_shape(C, d.class_axis))
    if multi_label:
        return steps.multi_label_candidates(b, key, d.class_axis), None
    return steps.select_best_class(b, key, d.class_axis)
