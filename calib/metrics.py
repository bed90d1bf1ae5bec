"""Detection metrics: AP (COCO), calibration errors (D-ECE, LaECE_0), negative-scene rates,
precision and recall at an operating point.

Everything works on ``MatchedDetections`` (calib.matching) or on plain arrays. A detection
*survives* an operating threshold when ``score > threshold[class]`` (strictly greater, as in
the reference pipeline); thresholds are a scalar or a (C,) array. Because matching is greedy
by score within each class, the matches of the survivors are those of the full matching, so
the operating point is applied by filtering, never by re-matching.

Detections that ``MatchedDetections.ignored`` marks (unmatched, on a COCO crowd region of
their class) are neither true nor false positives: AP, precision, recall and the calibration
errors leave them out, as pycocotools does.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .jsonable import finite_or_none
from .matching import MatchedDetections

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "COCO_RECALL_THRESHOLDS",
    "dece",
    "dece_noise_floor",
    "add_dece_noise_floor",
    "laece0",
    "average_precision",
    "ap_per_class",
    "ap_per_class_and_threshold",
    "mean_ap",
    "survives",
    "fp_per_negative_image",
    "negative_image_rate",
    "PrecisionRecall",
    "precision_recall",
    "summarize",
]

# exactly pycocotools' Params.iouThrs and Params.recThrs
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


# ----------------------------------------------------------------------------- calibration


def _bin_index(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]; bin b holds [b/n, (b+1)/n), the last one also holds 1.0."""
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0 or not np.all(np.isfinite(scores))):
        raise ValueError("calibration errors need scores in [0, 1]")
    return np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)


def _binned_error(scores: np.ndarray, accuracy: np.ndarray, n_bins: int) -> float:
    """sum_b (n_b / N) |mean score_b - mean accuracy_b| over non-empty bins; nan if N == 0."""
    n = scores.shape[0]
    if n == 0:
        return math.nan
    b = _bin_index(scores, n_bins)
    sum_s = np.bincount(b, weights=scores, minlength=n_bins)
    sum_a = np.bincount(b, weights=accuracy, minlength=n_bins)
    # (n_b / N) * |sum_s/n_b - sum_a/n_b| = |sum_s - sum_a| / N
    return float(np.abs(sum_s - sum_a).sum() / n)


def dece(scores: np.ndarray, is_tp: np.ndarray, n_bins: int = 10) -> float:
    """Detection ECE (D-ECE) over the given detections.

    scores (K,) in [0, 1], is_tp (K,) bool -> sum over equal-width confidence bins of
    (n_b / K) * |mean score_b - precision_b|, with precision_b the share of true positives in
    bin b. Kueppers et al., "Multivariate Confidence Calibration for Object Detection",
    CVPR Workshops 2020 (confidence-only variant). Pass the detections kept at the operating
    threshold. nan when there are no detections.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, bool).reshape(-1)
    if scores.shape != is_tp.shape:
        raise ValueError(f"dece: {scores.shape[0]} scores but {is_tp.shape[0]} is_tp")
    return _binned_error(scores, is_tp.astype(np.float64), n_bins)


def dece_noise_floor(scores: np.ndarray, n_bins: int = 10, n_sim: int = 1000, seed: int = 0,
                     observed: float | None = None) -> dict:
    """What D-ECE a perfectly calibrated detector would show with these scores, by simulation.

    scores (K,) in [0, 1] (the detections kept at the operating point). D-ECE is biased upwards:
    even when each detection is a true positive with probability exactly its score, the binned
    error of K detections is about sum_b sqrt(2 n_b p_b (1 - p_b) / pi) / K (a few hundred
    detections: 0.02-0.04). Each of n_sim rounds draws is_tp ~ Bernoulli(score) and computes
    D-ECE with the same bins -> {"mean", "p90" (the 90th percentile), "n_sim", and with
    `observed` (the measured D-ECE) "p_value": the share of rounds at or above it, i.e. how often
    perfect calibration looks at least that bad; a large p_value: the measured D-ECE is what
    sampling alone gives}. Values None (nan) without detections. The draws are independent given
    the scores; detections of one image are not, so this is the least noise to expect, not all of it.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    out = {"mean": math.nan, "p90": math.nan, "n_sim": int(n_sim)}
    if observed is not None:
        out["p_value"] = math.nan
    if scores.size == 0 or n_sim < 1:
        return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in out.items()}
    b = _bin_index(scores, n_bins)
    sum_s = np.bincount(b, weights=scores, minlength=n_bins)
    onehot = np.zeros((scores.size, n_bins))
    onehot[np.arange(scores.size), b] = 1.0
    rng = np.random.default_rng(seed)
    sims = np.empty(n_sim)
    chunk = max(1, 4_000_000 // scores.size)
    for i in range(0, n_sim, chunk):
        y = (rng.random((min(chunk, n_sim - i), scores.size)) < scores).astype(np.float64)
        sims[i:i + y.shape[0]] = np.abs(sum_s[None, :] - y @ onehot).sum(axis=1) / scores.size
    out["mean"], out["p90"] = float(sims.mean()), float(np.percentile(sims, 90))
    if observed is not None and math.isfinite(observed):
        out["p_value"] = float(np.mean(sims >= observed - 1e-12))
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in out.items()}


def add_dece_noise_floor(metrics: dict, matched: MatchedDetections, thresholds=0.0, seed: int = 0) -> dict:
    """Into a `summarize` dict of the same detections and thresholds: "dece_noise_floor" (the
    dece_noise_floor dict of its survivors, crowd-ignored ones left out) and the flat
    "dece_if_calibrated" (its mean) and "dece_p_value" for tables. Returns metrics."""
    keep = survives(matched.scores, matched.classes, thresholds) & ~matched.ignored
    nf = dece_noise_floor(matched.scores[keep], seed=seed, observed=metrics.get("dece"))
    metrics["dece_noise_floor"] = nf
    metrics["dece_if_calibrated"] = nf["mean"]
    metrics["dece_p_value"] = nf.get("p_value")
    return metrics


def laece0(scores: np.ndarray, classes: np.ndarray, iou_of_tp_or_zero: np.ndarray, n_bins: int = 10) -> float:
    """Localisation-aware ECE, per class with IoU as the accuracy, averaged over classes.

    scores (K,) in [0, 1], classes (K,) int, iou_of_tp_or_zero (K,): a detection's accuracy
    is its IoU with its matched ground-truth box if it is a true positive, else 0
    (``MatchedDetections.iou`` is exactly that). For class c,
    LaECE^c = sum_b (n_b^c / N^c) |mean score_b^c - mean accuracy_b^c|, and the result is
    the mean over the classes that have at least one detection.

    Oksuz et al., "Towards Building Self-Aware Object Detectors via Reliable Uncertainty
    Quantification and Calibration", CVPR 2023 (LaECE); Kuzucu, Oksuz et al., "On
    Calibration of Object Detectors: Pitfalls, Evaluation and Baselines", ECCV 2024
    (LaECE_0: the true-positive IoU threshold is 0, so the score is calibrated against the
    IoU itself over its whole range). For LaECE_0 proper pass the IoUs of a matching at
    ``iou_threshold=0`` (``matched.rematch(0.0).iou``); ``summarize`` does so.
    nan when there are no detections.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    acc = np.asarray(iou_of_tp_or_zero, np.float64).reshape(-1)
    if not (scores.shape == classes.shape == acc.shape):
        raise ValueError("laece0: scores, classes and iou_of_tp_or_zero differ in length")
    if scores.size == 0:
        return math.nan
    b = _bin_index(scores, n_bins)
    present, cls = np.unique(classes, return_inverse=True)
    key = cls * n_bins + b
    size = present.size * n_bins
    sum_s = np.bincount(key, weights=scores, minlength=size).reshape(-1, n_bins)
    sum_a = np.bincount(key, weights=acc, minlength=size).reshape(-1, n_bins)
    n_c = np.bincount(cls, minlength=present.size)
    per_class = np.abs(sum_s - sum_a).sum(axis=1) / n_c
    return float(per_class.mean())


# ----------------------------------------------------------------------------- AP


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP for one class (as pycocotools' ``accumulate``).

    scores (K,), is_tp (K,) bool: all detections of the class over the dataset, in dataset
    order (ties in score keep that order, as pycocotools' mergesort does); n_gt: number of
    ground-truth boxes of the class. nan when n_gt == 0 (pycocotools' -1: the class does
    not count), 0.0 when there are ground-truth boxes but no detections.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    is_tp = np.asarray(is_tp, bool).reshape(-1)
    if scores.shape != is_tp.shape:
        raise ValueError(f"average_precision: {scores.shape[0]} scores but {is_tp.shape[0]} is_tp")
    if n_gt <= 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    return _ap_sorted(is_tp[order], n_gt)


def _ap_sorted(tp_sorted: np.ndarray, n_gt: int) -> float:
    if tp_sorted.size == 0:
        return 0.0
    tp = np.cumsum(tp_sorted, dtype=np.float64)
    fp = np.cumsum(~tp_sorted, dtype=np.float64)
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope from the right
    idx = np.searchsorted(recall, COCO_RECALL_THRESHOLDS, side="left")
    valid = idx < precision.size
    q = np.zeros(COCO_RECALL_THRESHOLDS.size)
    q[valid] = precision[idx[valid]]
    return float(q.mean())


def _class_order(matched: MatchedDetections):
    """Detections by class, then score descending (ties in dataset order); class bounds."""
    order = np.lexsort((-matched.scores, matched.classes))
    bounds = np.searchsorted(matched.classes[order], np.arange(matched.num_classes + 1))
    return order, bounds


def _ap_per_class(is_tp, n_gt_per_class, order, bounds, ignored=None) -> np.ndarray:
    tp_sorted = is_tp[order]
    counted = np.ones(tp_sorted.shape[0], bool) if ignored is None else ~ignored[order]
    out = np.full(n_gt_per_class.shape[0], math.nan)
    for c in np.flatnonzero(n_gt_per_class > 0):
        seg = slice(bounds[c], bounds[c + 1])
        out[c] = _ap_sorted(tp_sorted[seg][counted[seg]], int(n_gt_per_class[c]))
    return out


def ap_per_class(matched: MatchedDetections) -> np.ndarray:
    """(C,) AP per class at ``matched.iou_threshold``; nan for classes without ground truth."""
    return _ap_per_class(matched.is_tp, matched.n_gt_per_class, *_class_order(matched), matched.ignored)


def ap_per_class_and_threshold(matched: MatchedDetections, iou_thresholds=COCO_IOU_THRESHOLDS) -> np.ndarray:
    """(T, C) AP per IoU threshold and class; nan for classes without ground truth.

    Re-matches at each threshold (cheap: the IoU pairs are reused). Pass the full matched
    set (not a ``subset``): AP integrates over all scores.
    """
    iou_thresholds = np.atleast_1d(np.asarray(iou_thresholds, np.float64))
    order, bounds = _class_order(matched)
    rows = []
    for t in iou_thresholds:
        m = matched if t == matched.iou_threshold else matched.rematch(t)
        rows.append(_ap_per_class(m.is_tp, matched.n_gt_per_class, order, bounds, m.ignored))
    return np.stack(rows) if rows else np.zeros((0, matched.num_classes))


def mean_ap(matched: MatchedDetections, iou_thresholds=COCO_IOU_THRESHOLDS) -> float:
    """mAP over the classes with ground truth and over ``iou_thresholds`` (COCO's AP).

    ``mean_ap(m, [0.5])`` is AP50, ``mean_ap(m)`` AP50:95. nan when no class has ground truth.
    """
    has_gt = matched.n_gt_per_class > 0
    if not has_gt.any():
        return math.nan
    return float(ap_per_class_and_threshold(matched, iou_thresholds)[:, has_gt].mean())


# ----------------------------------------------------------------------------- operating point


def survives(scores: np.ndarray, classes: np.ndarray, thresholds) -> np.ndarray:
    """(K,) bool: ``score > thresholds[class]`` (thresholds a scalar or (C,) array)."""
    scores = np.asarray(scores, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim == 0:
        return scores > thresholds
    classes = np.asarray(classes, np.int64)
    if classes.size and classes.max() >= thresholds.shape[0]:
        raise ValueError(f"thresholds has {thresholds.shape[0]} classes, class id {int(classes.max())} seen")
    return scores > thresholds[classes]


def _negative_survivors(matched: MatchedDetections, thresholds, min_score=None):
    keep = survives(matched.scores, matched.classes, thresholds)
    if min_score is not None:
        keep &= matched.scores > min_score
    return keep & matched.negative_image_mask[matched.image_index]


def fp_per_negative_image(matched: MatchedDetections, thresholds=0.0) -> float:
    """Surviving detections on negative images (no ground truth) per negative image; nan if none."""
    n_neg = matched.n_negative_images
    if n_neg == 0:
        return math.nan
    return float(_negative_survivors(matched, thresholds).sum() / n_neg)


def negative_image_rate(matched: MatchedDetections, thresholds=0.0, min_score: float | None = None) -> float:
    """Share of negative images with at least one surviving detection; nan if no negatives.

    min_score: count only survivors with ``score > min_score`` too (0.8 gives "negative
    images with a detection above 0.8").
    """
    n_neg = matched.n_negative_images
    if n_neg == 0:
        return math.nan
    keep = _negative_survivors(matched, thresholds, min_score)
    return float(np.unique(matched.image_index[keep]).size / n_neg)


class PrecisionRecall(NamedTuple):
    """Precision and recall of the survivors; micro (all classes pooled) and per class (C,)."""

    precision: float
    recall: float
    precision_per_class: np.ndarray
    recall_per_class: np.ndarray


def precision_recall(matched: MatchedDetections, thresholds=0.0) -> PrecisionRecall:
    """Precision and recall at the operating threshold(s), at ``matched.iou_threshold``.

    precision = surviving TPs / survivors (nan with no survivors), recall = surviving TPs /
    ground-truth boxes (nan without ground truth). Negative images count (their detections
    are false positives); detections ignored on crowd regions do not count.
    """
    keep = survives(matched.scores, matched.classes, thresholds) & ~matched.ignored
    c = matched.num_classes
    n_kept = np.bincount(matched.classes[keep], minlength=c)
    n_tp = np.bincount(matched.classes[keep & matched.is_tp], minlength=c)
    n_gt = matched.n_gt_per_class
    with np.errstate(divide="ignore", invalid="ignore"):
        p_c = np.where(n_kept > 0, n_tp / np.maximum(n_kept, 1), math.nan)
        r_c = np.where(n_gt > 0, n_tp / np.maximum(n_gt, 1), math.nan)
    p = n_tp.sum() / n_kept.sum() if n_kept.sum() else math.nan
    r = n_tp.sum() / n_gt.sum() if n_gt.sum() else math.nan
    return PrecisionRecall(float(p), float(r), p_c, r_c)


# ----------------------------------------------------------------------------- summary


def summarize(
    matched: MatchedDetections,
    thresholds=0.0,
    n_bins: int = 10,
    high_score: float = 0.8,
    class_names=None,
) -> dict:
    """All the metrics of one set of detections, as a JSON-friendly dict.

    matched: the full matched detections (low confidence threshold, for AP), at IoU 0.5.
    thresholds: the operating point, scalar or (C,); precision, recall, D-ECE, LaECE_0 and
    the negative-scene numbers are over the survivors, AP over everything.
    LaECE_0 uses the IoUs of a matching at IoU > 0 (Kuzucu et al. 2024); D-ECE and
    precision/recall use ``matched.iou_threshold``. nan values become None.
    """
    ignored = matched.ignored
    keep = survives(matched.scores, matched.classes, thresholds) & ~ignored
    pr = precision_recall(matched, thresholds)
    ap_tc = ap_per_class_and_threshold(matched, COCO_IOU_THRESHOLDS)
    ap50_c = ap_tc[0]
    loose = matched.rematch(0.0)
    thr = np.asarray(thresholds, np.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(matched.num_classes)]
    per_class = {
        names[c]: {
            "n_gt": int(matched.n_gt_per_class[c]),
            "ap50": finite_or_none(ap50_c[c]),
            "precision": finite_or_none(pr.precision_per_class[c]),
            "recall": finite_or_none(pr.recall_per_class[c]),
            "threshold": finite_or_none(thr if thr.ndim == 0 else thr[c]),
        }
        for c in range(matched.num_classes)
    }
    has_gt = matched.n_gt_per_class > 0
    return {
        "n_images": int(matched.n_images),
        "n_negative_images": matched.n_negative_images,
        "n_detections": matched.n_detections,
        "n_kept": int(keep.sum()),
        "n_ignored_on_crowd": int(ignored.sum()),
        "iou_threshold": float(matched.iou_threshold),
        "ap50": finite_or_none(np.nanmean(ap50_c[has_gt]) if has_gt.any() else math.nan),
        "ap50_95": finite_or_none(ap_tc[:, has_gt].mean() if has_gt.any() else math.nan),
        "precision": finite_or_none(pr.precision),
        "recall": finite_or_none(pr.recall),
        "dece": finite_or_none(dece(matched.scores[keep], matched.is_tp[keep], n_bins)),
        "laece0": finite_or_none(laece0(matched.scores[keep], matched.classes[keep], loose.iou[keep], n_bins)),
        "fp_per_negative_image": finite_or_none(fp_per_negative_image(matched, thresholds)),
        "negative_image_rate": finite_or_none(negative_image_rate(matched, thresholds)),
        f"negative_image_rate_above_{high_score:g}": finite_or_none(negative_image_rate(matched, thresholds, high_score)),
        "per_class": per_class,
    }
