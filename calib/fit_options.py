"""`detcal fit`'s options (FitOptions, checked once in `validate`) and what follows from them
alone: the post-processing a head layout is fitted with, and the options of one cross-validation fold."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .artifact import BOX_KIND, PostprocessConfig
from .calibrators import CANDIDATES
from .certify import SHAPES
from .errors import DetcalError
from .thresholds import clopper_pearson_upper


OPERATING_POINTS = ("baseline", "f1", "max-recall")


@dataclass
class FitOptions:
    calibrator: str = "auto"
    max_negative_rate: float = 0.01
    confidence: float = 0.95
    match_iou: float = 0.5
    base_conf: float = 0.001
    baseline_conf: float = 0.25
    folds: int = 5
    seed: int = 0
    # where thresholds start before the negative scenes raise them: "baseline" = the raw
    # --baseline-conf mapped through the calibrator (today's operating point, same detections),
    # "f1" = per-class F1-optimal on positive images, "max-recall" = the --base-conf floor
    operating_point: str = "baseline"
    # the threshold family certified on the negative scenes: per-class, global, or auto (per-class
    # unless it loses more than a recall point to global on held-out folds); see calib.certify
    threshold_shape: str = "auto"
    # raw score above which the calibrator is fitted and chosen; None: the per-class thresholds the
    # operating-point rule picks on the raw scores (fit where users look)
    fit_floor: float | None = None
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    # DETR heads (layout `detr`) predict a set of queries and need no NMS: unless this is set,
    # fit records iou_threshold 1.0 for them (NonMaxSuppression then suppresses nothing)
    nms_on_queries: bool = False

    def validate(self) -> None:
        if self.calibrator != "auto" and self.calibrator not in CANDIDATES + ("identity", BOX_KIND):
            raise DetcalError(f"unknown calibrator {self.calibrator!r}")
        if not 0 < self.max_negative_rate < 1:
            raise DetcalError(f"--max-negative-rate must be in (0, 1), got {self.max_negative_rate}")
        if not 0.5 <= self.confidence < 1:
            raise DetcalError(f"--confidence must be in [0.5, 1), got {self.confidence}")
        if not 0 < self.match_iou <= 1:
            raise DetcalError(f"--match-iou must be in (0, 1], got {self.match_iou}")
        if not 0 <= self.base_conf < 1 or not 0 <= self.baseline_conf < 1:
            raise DetcalError("--base-conf and --baseline-conf must be in [0, 1)")
        if self.operating_point not in OPERATING_POINTS:
            raise DetcalError(f"--operating-point must be one of {', '.join(OPERATING_POINTS)}, got {self.operating_point!r}")
        if self.threshold_shape not in SHAPES:
            raise DetcalError(f"threshold shape must be one of {', '.join(SHAPES)}, got {self.threshold_shape!r}")
        if self.fit_floor is not None and not 0 <= self.fit_floor < 1:
            raise DetcalError(f"--fit-floor must be in [0, 1), got {self.fit_floor}")
        if self.folds < 2:
            raise DetcalError(f"--folds must be >= 2, got {self.folds}")


def postprocess_for_layout(layout: str, options: FitOptions) -> PostprocessConfig:
    """The post-processing fit uses and records: `detr` heads (a set of queries) get no NMS
    (IoU 1.0: NonMaxSuppression suppresses nothing) unless options.nms_on_queries."""
    if layout == "detr" and not options.nms_on_queries:
        return replace(options.postprocess, iou_threshold=1.0)
    return options.postprocess


def fold_options(n_negative: int, opts: FitOptions) -> FitOptions:
    """The options a fold's thresholds are fitted with: the same procedure, certified at the target
    or, where the fold's n_negative images are too few to certify it at all, at the strictest rate
    they can (so the "after" numbers measure certified thresholds, as shipped, and not the
    uncertified fallback that would fire far more often on new images)."""
    if n_negative == 0:
        return opts
    reachable = clopper_pearson_upper(0, n_negative, opts.confidence) * (1.0 + 1e-9)
    if reachable <= opts.max_negative_rate or reachable >= 1.0:
        return opts
    return replace(opts, max_negative_rate=reachable)
