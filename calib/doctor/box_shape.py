"""Check 2, box_shape: predicted vs ground-truth box sizes and aspect ratios, and the anchors' fit."""
from __future__ import annotations

import math

import numpy as np
import onnx

from ..boxes import box_iou
from ..artifact import SCALE_X, SCALE_Y
from ..model_info import ModelInfo
from .anchors import best_possible_recall, kmeans_anchors, read_anchors
from .report import Check, DoctorOptions, fmt_size, skipped, verdict
from .runs import Run


def _gt_input_wh(run: Run) -> np.ndarray:
    c = run.collected
    out = []
    for gt, row in zip(c.gt_boxes_xyxy, c.rows):
        if len(gt):
            out.append(np.stack([(gt[:, 2] - gt[:, 0]) * row[SCALE_X], (gt[:, 3] - gt[:, 1]) * row[SCALE_Y]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _pred_input_wh(run: Run, conf: float) -> np.ndarray:
    out = []
    for d in run.collected.detections:
        b = d.boxes_input_xyxy[d.scores > conf]
        if len(b):
            out.append(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1))
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 2))


def _loc_recall(run: Run, iou: float) -> float:
    """Share of ground-truth boxes that some detection (any class, any score above the floor) covers at IoU >= iou."""
    hit = n = 0
    for d, gt in zip(run.collected.detections, run.collected.gt_boxes_xyxy):
        if len(gt):
            n += len(gt)
            if len(d):
                hit += int((box_iou(gt, d.boxes_xyxy).max(axis=1) >= iou).sum())
    return hit / n if n else math.nan


def check_box_shape(main: Run, model_proto: onnx.ModelProto, info: ModelInfo, opts: DoctorOptions) -> Check:
    name = "box_shape"
    gt = _gt_input_wh(main)
    gt = gt[(gt > 0).all(axis=1)]
    if len(gt) == 0:
        return skipped(name, "no labelled boxes in the split")
    pred = _pred_input_wh(main, opts.conf)
    pred = pred[(pred > 0).all(axis=1)]
    ev = {"n_gt": len(gt), "n_pred": len(pred), "conf": opts.conf, "units": f"input px at {fmt_size(main.size)}"}
    q = (10, 50, 90)
    ev["gt_size_quantiles"] = np.percentile(np.sqrt(gt.prod(axis=1)), q)
    ev["gt_aspect_wh_quantiles"] = np.percentile(gt[:, 0] / gt[:, 1], q)
    ev["localisation_recall_iou50"] = _loc_recall(main, opts.match_iou)
    problems, fail, warn = [], False, False
    if len(pred):
        ev["pred_size_quantiles"] = np.percentile(np.sqrt(pred.prod(axis=1)), q)
        ev["pred_aspect_wh_quantiles"] = np.percentile(pred[:, 0] / pred[:, 1], q)
        size_ratio = ev["pred_size_quantiles"][1] / ev["gt_size_quantiles"][1]
        aspect_ratio = ev["pred_aspect_wh_quantiles"][1] / ev["gt_aspect_wh_quantiles"][1]
        ev["size_ratio_pred_over_gt"], ev["aspect_ratio_pred_over_gt"] = size_ratio, aspect_ratio
        for label, r in (("size", size_ratio), ("aspect ratio", aspect_ratio)):
            far = max(r, 1 / r)
            fail |= far > opts.size_ratio_fail
            warn |= far > opts.size_ratio_warn
            if far > opts.size_ratio_warn:
                problems.append(f"median predicted {label} is {r:.2f}x the labelled one")
        shape = (f"median size {ev['pred_size_quantiles'][1]:.1f} px predicted vs {ev['gt_size_quantiles'][1]:.1f} px labelled, "
                 f"aspect w/h {ev['pred_aspect_wh_quantiles'][1]:.2f} vs {ev['gt_aspect_wh_quantiles'][1]:.2f}")
    else:
        shape = f"no detection above {opts.conf:g} to compare with {len(gt)} labelled boxes"
    if info.layout == "xywh_obj_cls":
        anchors, why = read_anchors(model_proto, main.size)
    else:   # anchor-free heads: any prior-box constants inside are not anchors to re-fit
        anchors, why = None, f"anchor-free head ({info.layout}): no anchors to check"
    ev["anchors_note"] = why
    if anchors is None:
        anchor_text = "anchors: not read, " + why.split(" (")[0]
    else:
        k = len(anchors)
        km = kmeans_anchors(gt, k, seed=opts.seed)
        bpr_m, iou_m = best_possible_recall(gt, anchors, opts.anchor_t)
        bpr_k, iou_k = best_possible_recall(gt, km, opts.anchor_t)
        ev.update({"anchors_model": anchors, "anchors_kmeans": km, "bpr_model": bpr_m, "bpr_kmeans": bpr_k,
                   "mean_best_iou_model": iou_m, "mean_best_iou_kmeans": iou_k, "anchor_t": opts.anchor_t})
        fail |= bpr_m < opts.bpr_fail
        warn |= bpr_m < opts.bpr_warn or iou_k - iou_m > 0.15
        if bpr_m < opts.bpr_warn or iou_k - iou_m > 0.15:
            problems.append(f"model anchors cover {bpr_m:.1%} of labelled boxes (k-means anchors {bpr_k:.1%})")
        anchor_text = (f"anchors: best possible recall {bpr_m:.3f} (k-means {bpr_k:.3f}), "
                       f"mean best IoU {iou_m:.2f} (k-means {iou_k:.2f})")
    if not len(pred) and anchors is None:
        return skipped(name, f"{shape}: the model finds nothing at {fmt_size(main.size)}; {anchor_text}", **ev)
    status, sev = verdict(fail, warn)
    finding = ("; ".join(problems) + f" ({shape}; {anchor_text})") if problems else f"{shape}; {anchor_text}"
    fix = ""
    if status != "ok":
        fix = ("serve at the resolution the model was trained at so objects have their trained size"
               if ev.get("size_ratio_pred_over_gt") and max(ev["size_ratio_pred_over_gt"], 1 / ev["size_ratio_pred_over_gt"]) > opts.size_ratio_warn
               else "retrain or fine-tune on data with these box shapes")
        if anchors is not None and ev.get("bpr_model", 1) < opts.bpr_warn:
            fix += "; retrain with the k-means anchors in evidence.anchors_kmeans (YOLOv5: autoanchor)"
    return Check(name, status, sev, finding, ev, fix)
