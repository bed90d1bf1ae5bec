"""The evaluated columns (raw, reference, patched) and their metrics: accuracy, calibration,
negative scenes, latency."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..jsonable import finite_or_none, to_jsonable
from ..matching import MatchedDetections, match_detections
from ..metrics import add_dece_noise_floor, mean_ap, summarize, survives
from ..pipeline import Detections

EVAL_FORMAT = "detcal.eval"
EVAL_VERSION = 1


@dataclass
class Column:
    """One evaluated pipeline: its detections, matched, and where its operating point is."""

    name: str
    definition: str
    detections: list[Detections] = field(default_factory=list)
    thresholds: np.ndarray | float = -1.0   # operating point on its scores; -1 = everything it outputs
    model_seconds: list[float] = field(default_factory=list)   # per batch, the session.run call(s)
    post_seconds: list[float] = field(default_factory=list)    # per batch, numpy post-processing
    batch_sizes: list[int] = field(default_factory=list)
    matched: MatchedDetections | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    columns: dict[str, Column]
    settings: dict
    data: dict
    notes: list[str]
    warnings: list[str]
    gt_boxes_xyxy: list[np.ndarray] = field(default_factory=list, repr=False)   # per image (M, 4) original px
    gt_classes: list[np.ndarray] = field(default_factory=list, repr=False)      # per image (M,) int64
    table: str = ""
    out: Path | None = None

    def metrics(self, name: str) -> dict:
        return self.columns[name].metrics

    def to_dict(self) -> dict:
        return to_jsonable({
            "format": EVAL_FORMAT,
            "version": EVAL_VERSION,
            "settings": self.settings,
            "data": self.data,
            "columns": {n: {"definition": c.definition, "metrics": c.metrics} for n, c in self.columns.items()},
            "notes": self.notes,
            "warnings": self.warnings,
        })


def _percentiles_ms(seconds: list[float], batch_sizes: list[int]) -> tuple[float | None, float | None]:
    if not seconds:
        return None, None
    per_image = np.asarray(seconds) / np.maximum(np.asarray(batch_sizes, np.float64), 1) * 1e3
    return float(np.median(per_image)), float(np.percentile(per_image, 90))


def _match(dets: list[Detections], gt_boxes, gt_classes, num_classes: int, iou: float, crowd=None) -> MatchedDetections:
    crowd_boxes, crowd_classes = crowd if crowd is not None else (None, None)
    return match_detections(dets, gt_boxes, gt_classes, iou, num_classes, crowd_boxes, crowd_classes)


def column_metrics(col: Column, gt_boxes, gt_classes, names: list[str], iou: float, crowd=None) -> dict:
    """Match col's detections to the ground truth (per image (M, 4) xyxy original px, (M,) classes)
    at IoU >= iou and summarise: AP, AP at the operating point, calibration, negatives, latency.
    crowd: optional (per-image crowd boxes (R, 4) xyxy original px, per-image classes (R,)):
    COCO ignore regions, a detection on one is neither TP nor FP."""
    c = len(names)
    col.matched = m = _match(col.detections, gt_boxes, gt_classes, c, iou, crowd)
    out = add_dece_noise_floor(summarize(m, col.thresholds, class_names=names), m, col.thresholds)
    keep = survives(m.scores, m.classes, col.thresholds)
    if np.ndim(col.thresholds) == 0 and float(col.thresholds) < 0:   # everything it outputs
        out["ap50_at_op"], out["ap50_95_at_op"] = out["ap50"], out["ap50_95"]
    else:
        out["ap50_at_op"], out["ap50_95_at_op"] = ap_of_survivors(col, keep, gt_boxes, gt_classes, c, iou, crowd)
    model_med, model_p90 = _percentiles_ms(col.model_seconds, col.batch_sizes)
    out["latency_model_ms_median"], out["latency_model_ms_p90"] = model_med, model_p90
    if col.post_seconds:
        post_med, post_p90 = _percentiles_ms(col.post_seconds, col.batch_sizes)
        total = [a + b for a, b in zip(col.model_seconds, col.post_seconds)]
        tot_med, tot_p90 = _percentiles_ms(total, col.batch_sizes)
    else:
        post_med = post_p90 = None
        tot_med, tot_p90 = model_med, model_p90
    out["latency_post_ms_median"], out["latency_post_ms_p90"] = post_med, post_p90
    out["latency_total_ms_median"], out["latency_total_ms_p90"] = tot_med, tot_p90
    return out


def ap_of_survivors(col: Column, keep: np.ndarray, gt_boxes, gt_classes, num_classes: int, iou: float,
                    crowd=None) -> tuple[float | None, float | None]:
    """(AP50, AP50:95) of col's detections where keep (K,) bool (in col.matched's order, image by
    image), matched again on their own: AP as if only those had been output."""
    kept = [Detections(d.boxes_xyxy[s], d.scores[s], d.classes[s])
            for d, s in zip(col.detections, _split(keep, col.detections))]
    mk = _match(kept, gt_boxes, gt_classes, num_classes, iou, crowd)
    return finite_or_none(mean_ap(mk, [0.5])), finite_or_none(mean_ap(mk))


def add_ap_at_fitted_thresholds(columns: dict[str, Column], calibration, thresholds, gt_boxes, gt_classes,
                                names: list[str], iou: float, crowd=None) -> list[str]:
    """AP50 (and AP50:95) of the raw model's detections kept at the SAME raw-space per-class thresholds
    the calibrated pipeline applies (raw_space_thresholds), beside the calibrated columns' AP50 over
    what they output: the like-for-like "AP at the operating point". Calibration is monotone per
    class, so the two differ only where the best class of a box changes after calibration, where a
    box-aware map reorders or keeps other boxes, or at calibration ties. Into the raw column's metrics
    ("ap50_at_fitted_thresholds", "ap50_95_at_fitted_thresholds", "fitted_raw_thresholds") and each
    calibrated column's ("ap50_minus_raw_at_same_thresholds"); returns the notes that say so."""
    raw = columns["raw"]
    r = raw_space_thresholds(calibration, thresholds)
    keep = survives(raw.matched.scores, raw.matched.classes, r)
    ap50, ap50_95 = ap_of_survivors(raw, keep, gt_boxes, gt_classes, len(names), iou, crowd)
    raw.metrics["ap50_at_fitted_thresholds"], raw.metrics["ap50_95_at_fitted_thresholds"] = ap50, ap50_95
    raw.metrics["fitted_raw_thresholds"] = {n: finite_or_none(v) for n, v in zip(names, r)}
    notes = []
    for name, col in columns.items():
        own = col.metrics.get("ap50_at_op")
        if name == "raw" or own is None or ap50 is None:
            continue
        col.metrics["ap50_minus_raw_at_same_thresholds"] = own - ap50
        notes.append(f"AP50 at the operating point: {name} {own:.3f} vs {ap50:.3f} for the raw model at the same "
                     f"raw per-class thresholds (difference {own - ap50:+.3f})")
    return notes


def add_intervals_and_baseline(columns: dict[str, Column]) -> list[str]:
    """Bootstrap intervals by image (D-ECE, recall, negative-image rate) into every column's
    metrics ("intervals"), and for each calibrated column the recall of the best single raw
    threshold at the same negative-image rate on the same images, in hindsight
    ("global_baseline"); returns the notes that say so."""
    from ..bootstrap import intervals_to_dict, metric_intervals
    from ..certify import ScoredImages, global_baseline

    for col in columns.values():
        col.metrics["intervals"] = intervals_to_dict(metric_intervals(col.matched.without_ignored(), thresholds=col.thresholds))
    notes = []
    raw = ScoredImages.from_matched(columns["raw"].matched)
    for name, col in columns.items():
        rate, rec = col.metrics.get("negative_image_rate"), col.metrics.get("recall")
        if name == "raw" or rate is None or rec is None:
            continue
        b = global_baseline(raw, rate)
        col.metrics["global_baseline"] = b
        if b["recall"] is not None:
            notes.append(f"recall at the same negative-image rate ({rate:.1%}): {name} {rec:.3f} vs {b['recall']:.3f} "
                         f"for the best single raw threshold in hindsight ({b['threshold']:.3f}) on these images")
    return notes


def raw_space_thresholds(calibration, thresholds) -> np.ndarray:
    """(C,) float64 raw scores r_c: the raw model's detections of class c with score > r_c are the
    ones the patched model keeps. calibration: the artifact's map, thresholds (C,) calibrated.

    Monotone per-class maps: the map's own raw thresholds (cast to float32, as the graph bakes them).
    The box-aware map has a threshold per candidate; its raw-space equivalent here is the raw score
    at which the fitting data's mean box passes, never below its raw fitting floor."""
    from ..artifact import BOX_KIND, logit

    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if calibration.kind != BOX_KIND:
        return calibration.raw_thresholds(thr).astype(np.float32).astype(np.float64)
    with np.errstate(divide="ignore"):
        z = (logit(np.clip(thr, 0.0, 1.0)) - calibration.b) / calibration.a
    r = np.where(thr <= 0, -np.inf, np.where(thr >= 1, np.inf, 1 / (1 + np.exp(-np.clip(z, -700, 700)))))
    if calibration.raw_floor is not None:
        r = np.maximum(r, calibration.raw_floor)
    return r


def _split(mask: np.ndarray, dets: list[Detections]) -> list[np.ndarray]:
    bounds = np.cumsum([len(d) for d in dets])[:-1]
    return np.split(mask, bounds)
