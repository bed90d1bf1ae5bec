"""The evaluated columns (raw, reference, patched) and their metrics: accuracy, calibration,
negative scenes, latency."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..jsonable import finite_or_none, to_jsonable
from ..matching import MatchedDetections, match_detections
from ..metrics import mean_ap, summarize, survives
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


def _match(dets: list[Detections], gt_boxes, gt_classes, num_classes: int, iou: float) -> MatchedDetections:
    return match_detections(dets, gt_boxes, gt_classes, iou, num_classes)


def column_metrics(col: Column, gt_boxes, gt_classes, names: list[str], iou: float) -> dict:
    """Match col's detections to the ground truth (per image (M, 4) xyxy original px, (M,) classes)
    at IoU >= iou and summarise: AP, AP at the operating point, calibration, negatives, latency."""
    c = len(names)
    col.matched = m = _match(col.detections, gt_boxes, gt_classes, c, iou)
    out = summarize(m, col.thresholds, class_names=names)
    keep = survives(m.scores, m.classes, col.thresholds)
    if np.ndim(col.thresholds) == 0 and float(col.thresholds) < 0:   # everything it outputs
        out["ap50_at_op"], out["ap50_95_at_op"] = out["ap50"], out["ap50_95"]
    else:
        kept = [Detections(d.boxes_xyxy[s], d.scores[s], d.classes[s])
                for d, s in zip(col.detections, _split(keep, col.detections))]
        mk = _match(kept, gt_boxes, gt_classes, c, iou)
        out["ap50_at_op"], out["ap50_95_at_op"] = finite_or_none(mean_ap(mk, [0.5])), finite_or_none(mean_ap(mk))
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


def _split(mask: np.ndarray, dets: list[Detections]) -> list[np.ndarray]:
    bounds = np.cumsum([len(d) for d in dets])[:-1]
    return np.split(mask, bounds)
