"""The steps of `detcal fit` between the matched detections and the artifact: the calibrator fitted
on the detections above the fitting floor, certified thresholds, k-fold cross-validation by image
(the "after" numbers, `cross_validate`), the operating-point check of `auto`, the held-out metrics.

Every function takes MatchedDetections (calib.matching) and FitOptions (calib.fit_options);
scores are (K,) per detection, thresholds (C,) per class.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .artifact import BOX_KIND
from .certify import CertifiedThresholds, certify_matched
from .collect import Collected
from .cross_validation import image_folds
from .fit_options import FitOptions, fold_options
from .floor_selection import above_floor, calibrate, choose_on_floor
from .jsonable import finite_or_none
from .matching import MatchedDetections, match_detections
from .metrics import add_dece_noise_floor, dece, mean_ap, summarize, survives
from .thresholds import f1_thresholds


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
