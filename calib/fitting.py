"""`detcal fit`: run the raw model over a validation set, fit calibration and rejection thresholds.

Every "after" number is cross-validated: images are split into k folds; for each fold the
calibrator and thresholds are fitted on the other folds and measured on it, and the held-out
results are pooled. The artifact's calibrator and thresholds are then fitted on all images.

The calibrator is fitted and chosen where users look (calib.floor_selection): on the detections
of the positive images (the negative images certify the thresholds, calib.certify) above a fitting floor, by default the per-class thresholds the operating-point rule picks on the
raw scores before the negative scenes raise them (Kuzucu et al., ECCV 2024), `--fit-floor` to set a
raw score instead. `auto` picks by
held-out log-loss with held-out D-ECE as the check and keeps identity unless both improve; the
selection runs again inside every fold of the "after" numbers (nested cross-validation), which must
beat identity on held-out log-loss; D-ECE is judged where it is defined:
last, `auto` keeps its choice only if, at the operating point (the held-out detections that
survive each fold's certified thresholds), its held-out D-ECE is below identity's
(`operating_point_check`). Nothing at or below the floor survives (the calibrator is an
extrapolation there). Beside every D-ECE the report gives what a perfectly calibrated detector
would show with the same scores (`calib.metrics.dece_noise_floor`).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .artifact import BOX_KIND, Artifact
from .atomic import atomic_write_json, atomic_write_text, check_writable
from .calibrators import CANDIDATES
from .cross_validation import image_folds
from .collect import Collected, collect_detections
from .data import Dataset, load_dataset
from .errors import DetcalError
from .floor_selection import above_floor, calibrate, choose_on_floor, input_boxes_of
from .jsonable import finite_or_none, to_jsonable
from .matching import MatchedDetections, match_detections
from .metrics import add_dece_noise_floor, dece, mean_ap, summarize, survives
from .model_info import check_class_count, read_model_info
from .artifact import PostprocessConfig
from .plots import operating_curves, save_operating_curves, save_reliability_diagrams
from .artifact import Preprocess
from .runner import resolve_input_size
from .bootstrap import format_interval_rows, intervals_to_dict, metric_intervals
from .certify import SHAPES, CertifiedThresholds, certify_matched
from .thresholds import clopper_pearson_upper, f1_thresholds


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


@dataclass
class FitResult:
    artifact: Artifact
    matched: MatchedDetections        # raw detections matched at match_iou
    before: dict                      # metrics of the raw model at baseline_conf
    after: dict                       # cross-validated metrics of calibrated + thresholded
    oof_scores: np.ndarray            # (K,) held-out calibrated scores
    oof_survive: np.ndarray           # (K,) bool, survived held-out thresholds
    thresholds: CertifiedThresholds
    calibrator: object
    selection: dict
    seconds: dict
    intervals: dict = field(default_factory=dict)   # {"before"|"after": {metric: Interval dict}}
    summary: str = ""


def match_collected(collected: Collected, num_classes: int, iou: float) -> MatchedDetections:
    return match_detections(collected.detections, collected.gt_boxes_xyxy, collected.gt_classes, iou, num_classes,
                            collected.crowd_boxes_xyxy, collected.crowd_classes)


def fitting_floor(matched: MatchedDetections, opts: FitOptions) -> np.ndarray:
    """(C,) raw scores above which the calibrator is fitted: --fit-floor, or the per-class thresholds
    the operating-point rule picks before calibration (on the raw scores)."""
    if opts.fit_floor is not None:
        return np.full(matched.num_classes, float(opts.fit_floor))
    # the operating point on the raw scale, before the negative scenes raise it: the detections a
    # user keeps today. (Not the certified thresholds: those look at the negative images, and at a
    # 1% target leave too few detections to fit anything but identity.)
    return np.asarray(_operating_point(matched, matched.scores, opts, None), dtype=np.float64)


def _fit_calibrator(kind: str, matched: MatchedDetections, boxes: np.ndarray | None, input_size, opts: FitOptions,
                    nested: bool = True):
    """Calibrator fitted on the detections above the fitting floor, and the selection report
    (with the floor, `fit_floor` (C,), and for auto the nested held-out summary). Fitted on the
    positive images only: the negative images certify the thresholds (see choose_on_floor)."""
    on_positive = ~matched.negative_image_mask[matched.image_index]
    return choose_on_floor(kind, matched.scores, matched.classes, matched.is_tp, matched.image_index, boxes,
                           fitting_floor(matched, opts), matched.num_classes, input_size, n_folds=opts.folds,
                           seed=opts.seed, nested=nested, dece_check="operating_point", fit_mask=on_positive)


def _per_class_transform(calibrator, values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """A calibrator's per-class image of raw values (C,) (box-aware maps: at the mean box)."""
    m = calibrator.map_
    return m.transform_mean_box(values, classes) if m.kind == BOX_KIND else calibrator.transform(values, classes)


def _floored_scores(calibrator, scores, classes, boxes, floor) -> np.ndarray:
    """Calibrated scores (K,), 0 at or below the fitting floor (C,) raw: nothing there survives
    (box-aware maps: their survival test; the others: thresholds >= map(floor), _fit_thresholds)."""
    cal = calibrate(calibrator, scores, classes, boxes)
    return np.where(above_floor(scores, classes, floor), cal, 0.0)


def _operating_point(matched: MatchedDetections, scores: np.ndarray, opts: FitOptions, calibrator) -> np.ndarray:
    """(C,) per-class thresholds on `scores` (K,) where the operating-point rule starts, before the
    negative scenes raise them (see FitOptions.operating_point); calibrator None: the raw scale."""
    c = matched.num_classes
    classes = np.arange(c)
    base = np.full(c, opts.base_conf) if calibrator is None else _per_class_transform(calibrator, np.full(c, opts.base_conf), classes)
    if opts.operating_point == "baseline":
        start = np.full(c, opts.baseline_conf)
        base = start if calibrator is None else _per_class_transform(calibrator, start, classes)
    elif opts.operating_point == "f1":
        pos = ~matched.negative_image_mask[matched.image_index]
        base = f1_thresholds(scores[pos], matched.classes[pos], matched.is_tp[pos], matched.n_gt_per_class, base)
    return base


def _fit_thresholds(matched: MatchedDetections, scores: np.ndarray, opts: FitOptions, calibrator,
                    floor: np.ndarray | None = None) -> CertifiedThresholds:
    """Per-class thresholds on calibrated `scores` (K,), certified out of sample on the negative
    scenes (calib.certify); the family ends at the operating point (see FitOptions.operating_point),
    never below the calibrated image of the fitting floor (C,) raw."""
    classes = np.arange(matched.num_classes)
    base = _operating_point(matched, scores, opts, calibrator)
    if floor is not None and calibrator is not None and calibrator.map_.kind != BOX_KIND:
        base = np.maximum(base, calibrator.transform(np.minimum(np.asarray(floor, np.float64), 1.0), classes))
    return certify_matched(matched, scores, base_threshold=base, max_negative_rate=opts.max_negative_rate,
                           confidence=opts.confidence, shape=opts.threshold_shape, seed=opts.seed)


def cross_validate(matched: MatchedDetections, kind: str, opts: FitOptions, boxes: np.ndarray | None = None,
                   input_size=None) -> tuple[np.ndarray, np.ndarray]:
    """k-fold by image (`cross_validation.image_folds`): held-out calibrated scores (K,) and whether
    each survived the thresholds fitted on the other folds (K,) bool. The training part of each
    fold gets its own fitting floor and, for kind "auto", its own selection (nested CV).
    boxes (K, 4) xyxy input px (for the box-aware candidate), input_size (H, W)."""
    image_fold = image_folds(matched.n_images, opts.folds, opts.seed)   # the folds selection used too
    k = int(image_fold.max()) + 1
    det_fold = image_fold[matched.image_index]
    oof = matched.scores.astype(np.float64).copy()
    keep = np.zeros(matched.n_detections, dtype=bool)
    for f in range(k):
        train_img = image_fold != f
        test = det_fold == f
        train_det = train_img[matched.image_index] & ~matched.ignored   # crowd-ignored: neither TP nor FP
        sub = _subset_images(matched, train_img).without_ignored()
        sub_boxes = None if boxes is None else boxes[train_det]
        n_pos = int(sub.is_tp.sum())
        cal = floor = None
        if kind != "identity" and 0 < n_pos < sub.n_detections:
            cal, rep = _fit_calibrator(kind, sub, sub_boxes, input_size, opts, nested=False)
            floor = np.asarray(rep["fit_floor"])
            if cal.map_.kind == "identity":
                cal = None
        if cal is None:
            # identity, or a training part with one label only: leave the scores as they are
            train_scores = sub.scores
            oof[test] = matched.scores[test]
        else:
            train_scores = _floored_scores(cal, sub.scores, sub.classes, sub_boxes, floor)
            oof[test] = _floored_scores(cal, matched.scores[test], matched.classes[test],
                                        None if boxes is None else boxes[test], floor)
        thr = _fit_thresholds(sub, train_scores, fold_options(sub.n_negative_images, opts), cal, floor)
        keep[test] = survives(oof[test], matched.classes[test], thr.score_)
    return oof, keep


def operating_point_check(matched: MatchedDetections, oof, keep, oof_identity, keep_identity) -> dict:
    """The last guard of `auto`: held-out D-ECE at the operating point (the held-out detections that
    survive each fold's certified thresholds, `cross_validate`) of the chosen calibrator against
    identity's (the raw scores with thresholds certified the same way). The calibrator is kept only
    if its D-ECE there is lower: "never worse than identity" judged where D-ECE is defined, not on
    the detections above the fitting floor alone. oof, keep (K,) as cross_validate returns them."""
    counted = ~matched.ignored
    k1, k0 = keep & counted, keep_identity & counted
    d1 = float(dece(np.clip(oof[k1], 0, 1), matched.is_tp[k1]))
    d0 = float(dece(np.clip(oof_identity[k0], 0, 1), matched.is_tp[k0]))
    ok = bool(np.isfinite(d1) and (not np.isfinite(d0) or d1 < d0))
    out = {"rule": "keep the calibrator only if its held-out D-ECE at the held-out certified operating point "
                   "is below identity's", "dece": finite_or_none(d1), "identity_dece": finite_or_none(d0),
           "n_kept": int(k1.sum()), "identity_n_kept": int(k0.sum()), "kept": ok}
    if not ok:
        out["note"] = (f"the chosen calibrator's held-out D-ECE at the operating point ({d1:.4f} on {int(k1.sum())} "
                       f"detections) is not below identity's ({d0:.4f} on {int(k0.sum())}): identity kept")
    return out


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


def _subset_images(matched: MatchedDetections, image_mask: np.ndarray) -> MatchedDetections:
    """The detections and ground truth of the images selected by image_mask, re-indexed."""
    new_index = np.cumsum(image_mask) - 1
    det = image_mask[matched.image_index]
    gt = image_mask[matched.gt_image_index]
    sub = matched.subset(det)
    return dataclasses.replace(
        sub,
        image_index=new_index[sub.image_index],
        gt_image_index=new_index[matched.gt_image_index[gt]],
        gt_classes=matched.gt_classes[gt],
        n_gt_per_class=np.bincount(matched.gt_classes[gt], minlength=matched.num_classes),
        n_images=int(image_mask.sum()),
        negative_image_mask=matched.negative_image_mask[image_mask],
    )


def after_metrics(matched: MatchedDetections, oof: np.ndarray, keep: np.ndarray, class_names) -> dict:
    """Metrics of held-out calibrated scores with held-out thresholds (survivors = keep)."""
    masked = dataclasses.replace(matched, scores=np.where(keep, oof, 0.0), pair_det=matched.pair_det,
                                 pair_gt=matched.pair_gt, pair_iou=matched.pair_iou)
    out = add_dece_noise_floor(summarize(masked, 0.0, class_names=class_names), masked, 0.0)
    ranked = dataclasses.replace(matched, scores=oof)
    out["ap50"] = finite_or_none(mean_ap(ranked, [0.5]))
    out["ap50_95"] = finite_or_none(mean_ap(ranked))
    return out


def fit(
    model: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    out: str | Path | None = None,
    preprocess: Preprocess = Preprocess(),
    options: FitOptions = FitOptions(),
    layout: str | None = None,
    imgsz=None,
    batch_size: int = 8,
    threads: int | None = None,
    names: list[str] | None = None,
    progress: bool = True,
    log=print,
    input_layout: str | None = None,
    collected: Collected | None = None,
) -> FitResult:
    """The whole fit as a library call. Writes `out` (and its report folder) when given.

    input_layout: 'NCHW' | 'NHWC' where the model's declared input dims leave it open (recorded).
    collected: the raw model's detections on `split`, already collected (collect_detections with
    the same preprocessing, size, base_conf and post-processing); None: run the model."""
    options.validate()
    t0 = time.perf_counter()
    if out is not None:
        check_writable(out, inputs=(model, data))
        check_report_dir(Path(out))
    dataset = load_dataset(data, split, names=names)
    info = read_model_info(model, layout=layout, num_classes=dataset.num_classes, input_layout=input_layout)
    num_classes = check_class_count(info, dataset.names, str(data))
    if info.is_patched:
        raise DetcalError(f"{model} is already patched by detcal; fit the raw exported model")
    if all(s.is_negative for s in dataset.samples):
        raise DetcalError(f"{data} ({split}): no image has a labelled object; calibration needs positive images")
    size = resolve_input_size(info, imgsz)
    options = replace(options, postprocess=postprocess_for_layout(info.layout, options))
    if collected is None:
        collected = collect_detections(
            dataset, info, preprocess, size, num_classes=num_classes, base_conf=options.base_conf,
            config=options.postprocess, batch_size=batch_size, threads=threads, progress=progress,
        )
    t_run = time.perf_counter()
    matched = match_collected(collected, num_classes, options.match_iou)
    if matched.n_detections == 0 or not matched.is_tp.any():
        raise DetcalError(
            f"{model}: no detection above {options.base_conf} matches any labelled object in {data}; "
            "check --layout, the preprocessing options and the class order")
    if matched.is_tp.all():
        raise DetcalError(f"{model}: every detection is a true positive; there is nothing to calibrate against")

    counted_mask = ~matched.ignored          # detections on crowd regions are neither TP nor FP
    counted = matched.without_ignored()
    boxes = input_boxes_of(collected.detections)
    try:
        calibrator, selection = _fit_calibrator(options.calibrator, counted, boxes[counted_mask], size, options)
    except ValueError as exc:
        raise DetcalError(f"cannot fit the calibrator: {exc}") from None
    floor = np.asarray(selection["fit_floor"])
    calibrated = _floored_scores(calibrator, counted.scores, counted.classes, boxes[counted_mask], floor)
    thresholds = _fit_thresholds(counted, calibrated, options, calibrator, floor)
    try:
        cv_kind = "identity" if selection.get("nested_fallback") else options.calibrator
        oof, keep = cross_validate(matched, cv_kind, options, boxes, size)
        if cv_kind == "auto" and calibrator.map_.kind != "identity":
            # never worse than identity where users look: at the operating point, out of sample
            oof_id, keep_id = cross_validate(matched, "identity", options, boxes, size)
            check = operating_point_check(matched, oof, keep, oof_id, keep_id)
            selection["operating_point_check"] = check
            if not check["kept"]:
                selection.update(winner="identity", selected=selection.get("winner"), note=check["note"])
                calibrator, sel_id = _fit_calibrator("identity", counted, boxes[counted_mask], size, options)
                floor = np.asarray(sel_id["fit_floor"])
                calibrated = _floored_scores(calibrator, counted.scores, counted.classes, boxes[counted_mask], floor)
                thresholds = _fit_thresholds(counted, calibrated, options, calibrator, floor)
                oof, keep = oof_id, keep_id
    except ValueError as exc:
        raise DetcalError(f"cannot cross-validate the calibration: {exc}") from None
    t_fit = time.perf_counter()

    before = add_dece_noise_floor(summarize(matched, options.baseline_conf, class_names=dataset.names), matched,
                                  options.baseline_conf)
    after = after_metrics(matched, oof, keep, dataset.names)
    for c, name in enumerate(dataset.names):      # the thresholds the artifact ships, not the 0.0 of the masked scores
        after["per_class"][name]["threshold"] = finite_or_none(thresholds.score_[c])
    counts = ~matched.ignored                 # the bootstrap sees only detections that are TP or FP
    intervals = {
        "before": intervals_to_dict(metric_intervals(counted, thresholds=options.baseline_conf, seed=options.seed)),
        "after": intervals_to_dict(metric_intervals(counted, scores=np.where(keep, oof, 0.0)[counts], thresholds=0.0,
                                                    seed=options.seed)),
    }
    model_block = {
        "file": Path(model).name,
        "sha256": info.sha256,
        "input_name": info.input_name,
        "input_size": [int(size[0]), int(size[1])],
        **info.input_convention.to_artifact(),      # input_dtype, input_layout (calib.model_input)
        "output_name": info.output_name,
        "layout": info.layout,
        "num_classes": num_classes,
        "class_names": list(dataset.names),
    }
    if info.head_params or len(info.outputs) > 1:
        # yolox_raw / gfl_multilevel / detr: every head output and the decode parameters, for the record
        # (patch recognises the head from the graph again and checks the layout)
        model_block["head"] = {"outputs": list(info.outputs), "recognition": info.recognition,
                               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in info.head_params.items()}}
    seconds = {"inference": round(t_run - t0, 3), "matching_and_fitting": round(t_fit - t_run, 3)}
    artifact = Artifact(
        model=model_block,
        preprocess=preprocess,
        calibration=calibrator.map_,
        thresholds=thresholds.to_artifact(),
        nms=options.postprocess,
        metrics={"before": before, "after": after, "negative_rate_target": options.max_negative_rate,
                 "after_fold_negative_rate_target": fold_options(
                     int(matched.n_negative_images * (1 - 1 / options.folds)), options).max_negative_rate,
                 "before_definition": f"raw scores, threshold {options.baseline_conf} (all images)",
                 "after_definition": f"{options.folds}-fold cross-validated by image: calibrator (chosen inside "
                                     "each fold for auto) and thresholds "
                                     "fitted on the other folds, measured on held-out images; a fold whose "
                                     "negative images are too few to certify the target is certified at the "
                                     "strictest rate they can (after_fold_negative_rate_target)"},
        selection=selection,
        extra={"source": str(dataset.source), "split": split, "n_images_used": len(collected),
               "labels": dataset.report.to_dict(), "seconds": seconds},
    )
    result = FitResult(artifact, matched, before, after, oof, keep, thresholds, calibrator, selection, seconds,
                       intervals)
    if out is not None:
        write_outputs(result, Path(out), dataset, options)
    return result


def report_dir_for(out: Path) -> Path:
    return out.with_name(out.stem + "_report")


def check_report_dir(out: Path) -> Path:
    """The report folder beside `out` can be made (checked before any work), or a DetcalError."""
    report_dir = report_dir_for(out)
    if report_dir.exists() and not report_dir.is_dir():
        raise DetcalError(f"the report folder {report_dir} is in the way: a file of that name exists")
    return report_dir


def write_outputs(result: FitResult, out: Path, dataset: Dataset, options: FitOptions) -> None:
    """calibration.json (atomic) and the report folder: PNGs, report.json, summary.txt."""
    report_dir = check_report_dir(out)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DetcalError(f"cannot create the report folder {report_dir}: {exc.strerror or exc}") from None
    m = result.matched
    raw_keep = survives(m.scores, m.classes, options.baseline_conf)
    save_reliability_diagrams(report_dir / "reliability.png", [
        (f"before: raw scores > {options.baseline_conf:g}", m.scores[raw_keep], m.is_tp[raw_keep]),
        ("after: calibrated, held-out", result.oof_scores[result.oof_survive], m.is_tp[result.oof_survive]),
    ])
    grid = np.linspace(0, 1, 201)
    neg_images = np.nonzero(m.negative_image_mask)[0]
    n_gt = int(m.n_gt_per_class.sum())
    curves = {
        "raw": operating_curves(m.scores, m.is_tp, m.image_index, neg_images, n_gt, grid),
        "calibrated (held-out)": operating_curves(result.oof_scores, m.is_tp, m.image_index, neg_images, n_gt, grid),
    }
    thr = np.asarray(result.thresholds.score_)
    save_operating_curves(report_dir / "thresholds.png", curves,
                          markers={"baseline": options.baseline_conf, "fitted (median class)": float(np.median(thr))})
    report = {
        "artifact": str(out),
        "data": result.artifact.extra,
        "calibrator": result.selection,
        "thresholds": result.thresholds.report(dataset.names),
        "metrics": result.artifact.metrics,
        "intervals": result.intervals,
    }
    summary = format_summary(result, dataset, out, report_dir)
    atomic_write_json(report_dir / "report.json", to_jsonable(report))
    atomic_write_text(report_dir / "summary.txt", summary + "\n")
    result.artifact.save(out)
    result.summary = summary


ROWS = [
    ("D-ECE", "dece", "{:.4f}"),
    ("D-ECE if perfectly calib.", "dece_if_calibrated", "{:.4f}"),
    ("  p(D-ECE this high | calib.)", "dece_p_value", "{:.2f}"),
    ("LaECE_0", "laece0", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("AP50", "ap50", "{:.3f}"),
    ("AP50:95", "ap50_95", "{:.3f}"),
    ("FP per negative image", "fp_per_negative_image", "{:.3f}"),
    ("negative images firing", "negative_image_rate", "{:.1%}"),
    ("negative images > 0.8", "negative_image_rate_above_0.8", "{:.1%}"),
]


def format_table(columns: list[tuple[str, dict]], rows=ROWS) -> str:
    """A plain-text metrics table: one row per metric, one column per (title, metrics dict).

    rows: (label, key, format) triples; a missing or None value prints as n/a.
    """
    width = max(24, *(len(t) + 2 for t, _ in columns))
    label_width = max(26, *(len(label) + 2 for label, _, _ in rows))
    lines = ["metric".ljust(label_width) + "".join(t.rjust(width) for t, _ in columns)]
    for label, key, fmt in rows:
        cells = []
        for _, m in columns:
            v = m.get(key)
            cells.append(("n/a" if v is None else fmt.format(v)).rjust(width))
        lines.append(label.ljust(label_width) + "".join(cells))
    return "\n".join(lines)


def format_summary(result: FitResult, dataset: Dataset, out: Path, report_dir: Path) -> str:
    a = result.artifact
    m = result.matched
    sel = result.selection
    lines = [
        f"detcal fit: {a.model['file']} on {a.extra['source']}: {m.n_images} images "
        f"({m.n_negative_images} negative), {int(m.n_gt_per_class.sum())} labelled objects, {m.n_detections} raw detections",
    ]
    rep = dataset.report
    if rep.n_clipped_boxes or rep.n_dropped_zero_size or rep.n_unreadable_images or rep.n_missing_label_files:
        lines.append(f"labels: {rep.n_clipped_boxes} boxes clipped to the image, {rep.n_dropped_zero_size} zero-size dropped, "
                     f"{rep.n_missing_label_files} images without a label file (negative), {rep.n_unreadable_images} unreadable images skipped")
    if sel.get("mode") == "auto":
        cands = sel.get("candidates", {})
        ident = cands.get("identity", {}).get("log_loss")
        win = sel["winner"]
        if sel.get("nested_fallback") or not sel.get("operating_point_check", {}).get("kept", True):
            lines.append(f"calibrator: identity (auto: {sel['note']})")
        elif win in cands:
            lines.append(f"calibrator: {win} (auto, on the {sel.get('n_above_floor')} detections above the fitting floor: "
                         f"{sel.get('n_folds')}-fold CV log-loss {cands[win]['log_loss']:.4f} vs identity {ident:.4f}, "
                         f"D-ECE {cands[win]['dece']:.4f} vs {cands['identity']['dece']:.4f})")
        else:
            lines.append(f"calibrator: {win} (auto: {sel.get('note', 'no comparison')})")
        opc = sel.get("operating_point_check")
        if opc and opc["kept"]:
            lines.append(f"  at the operating point (held-out CV, each fold's certified thresholds): D-ECE "
                         f"{opc['dece']:.4f} on {opc['n_kept']} detections vs identity {opc['identity_dece']:.4f} "
                         f"on {opc['identity_n_kept']}")
    else:
        lines.append(f"calibrator: {sel.get('winner')} (chosen with --calibrator)")
    lines += result.thresholds.summary_lines()
    lines.append("")
    before_title = f"before (raw > {a.metrics['before_definition'].split('threshold ')[1].split(' ')[0]})"
    lines.append(format_table([(before_title, result.before), ("after (held-out CV)", result.after)]))
    target, fold_rate = a.metrics.get("negative_rate_target"), a.metrics.get("after_fold_negative_rate_target")
    if target is not None and fold_rate is not None and fold_rate > target:
        lines.append(f"  (a fold's share of the negative images cannot certify {target:.0%}: the folds' thresholds are "
                     f"certified at {fold_rate:.2%}, so the 'after' column is a little looser than the artifact)")
    if result.intervals:
        lines.append("")
        lines.append(format_interval_rows([(before_title, result.intervals["before"]),
                                           ("after (held-out CV)", result.intervals["after"])]))
    lines.append("")
    lines.append(f"wrote {out} and the report in {report_dir}/ (reliability.png, thresholds.png, report.json)")
    return "\n".join(lines)
