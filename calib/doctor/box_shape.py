"""Check 2, box_shape: predicted vs labelled box sizes on pairs of the same object, and the anchors' fit.

Like with like: a prediction is compared only with the labelled box of its own object, never
the distribution of all predictions with that of all labels (a small model misses small objects,
so the boxes it does predict are larger than the average label although each one fits).

- matched pairs: detections (score > conf) matched to a label (same class, IoU >= 0.5):
  median log(sqrt(area_pred / area_label)) and log(aspect_pred / aspect_label). IoU >= 0.5
  bounds the size ratio to [0.71, 1.41], so this sees a systematic bias of a few percent.
- located pairs: each label with the same-class detection centred inside it that overlaps it
  most (any IoU): sees a gross bias (a 2x box never matches at IoU 0.5).

A bias is flagged only when its image-bootstrap interval excludes "no shift" (log-ratio 0) and
the estimate is beyond the tolerance: located pairs 1.5x warns, 2x fails; matched pairs 1.15x warns.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from ..artifact import SCALE_X, SCALE_Y
from ..model_info import ModelInfo
from .anchors import best_possible_recall, kmeans_anchors, read_anchors
from .report import Check, DoctorOptions, fmt_size, skipped, verdict
from .runs import Run
from .stats import Estimate, located_pairs, median_shift, size_shift


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


def ratio_text(e: Estimate) -> str:
    """A log-ratio estimate as a ratio with its interval: '1.02x [0.99, 1.05]'."""
    if not math.isfinite(e.value):
        return "n/a"
    return f"{math.exp(e.value):.2f}x [{math.exp(e.low):.2f}, {math.exp(e.high):.2f}]"


def _ratio_evidence(e: Estimate) -> dict:
    d = e.to_dict()
    if math.isfinite(e.value):
        d["ratio"] = math.exp(e.value)
        d["ratio_interval"] = [math.exp(e.low), math.exp(e.high)]
    return d


def check_box_shape(main: Run, model_proto: onnx.ModelProto, info: ModelInfo, opts: DoctorOptions) -> Check:
    name = "box_shape"
    gt = _gt_input_wh(main)
    gt = gt[(gt > 0).all(axis=1)]
    if len(gt) == 0:
        return skipped(name, "no labelled boxes in the split")
    c = main.collected
    n_img = main.matched.n_images
    kw = dict(n_boot=opts.bootstrap, level=opts.interval_level)
    matched = size_shift(c.detections, c.gt_boxes_xyxy, main.matched, conf=opts.conf, seed=opts.seed, **kw)
    img, ls, la = located_pairs(c.detections, c.gt_boxes_xyxy, c.gt_classes, opts.conf)
    located = {"log_size": median_shift(ls, img, n_img, seed=opts.seed + 2, **kw),
               "log_aspect": median_shift(la, img, n_img, seed=opts.seed + 3, **kw)}
    pred = _pred_input_wh(main, opts.conf)
    pred = pred[(pred > 0).all(axis=1)]
    q = (10, 50, 90)
    ev = {"n_gt": len(gt), "n_pred": len(pred), "conf": opts.conf,
          "compared": (f"predicted / labelled sqrt(area) and aspect w/h of the same object: matched pairs (same class, "
                       f"IoU >= {opts.match_iou:g}) and located pairs (same class, detection centred in the label, best "
                       f"IoU); median log-ratio, {opts.interval_level:.0%} interval by image bootstrap x{opts.bootstrap}"),
          "matched_pairs": {k: _ratio_evidence(v) for k, v in matched.items()},
          "located_pairs": {k: _ratio_evidence(v) for k, v in located.items()},
          "gt_size_quantiles": np.percentile(np.sqrt(gt.prod(axis=1)), q),
          "gt_aspect_wh_quantiles": np.percentile(gt[:, 0] / gt[:, 1], q),
          "units": f"input px at {fmt_size(main.size)} (quantiles); ratios are unit-free"}
    if len(pred):
        # descriptive only: all predictions vs all labels is biased by what the model misses
        ev["unpaired_pred_size_quantiles"] = np.percentile(np.sqrt(pred.prod(axis=1)), q)
        ev["unpaired_note"] = "all predictions vs all labels: not compared (selection by what the model finds)"
    problems, fail, warn, size_bias = [], False, False, False
    for label, key in (("size", "log_size"), ("aspect ratio", "log_aspect")):
        loc, mat = located[key], matched[key]
        if loc.n >= opts.min_pairs and loc.excludes(0.0):
            far = math.exp(abs(loc.value))
            if far > opts.size_ratio_warn:
                fail |= far > opts.size_ratio_fail
                warn = True
                problems.append(f"predicted {label} is {ratio_text(loc)} the labelled one on {loc.n} located pairs")
                size_bias |= key == "log_size"
                continue
        if mat.n >= opts.min_pairs and mat.excludes(0.0) and math.exp(abs(mat.value)) > opts.matched_ratio_warn:
            warn = True
            problems.append(f"predicted {label} is {ratio_text(mat)} the labelled one on {mat.n} matched pairs")
            size_bias |= key == "log_size"
    ms, ma = matched["log_size"], matched["log_aspect"]
    shape = (f"pred/label on {ms.n} matched pairs in {ms.n_images} images: size {ratio_text(ms)}, aspect "
             f"{ratio_text(ma)}; on {located['log_size'].n} located pairs: size {ratio_text(located['log_size'])}"
             if ms.n or located["log_size"].n else
             f"no detection above {opts.conf:g} on any of the {len(gt)} labelled boxes")
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
    if not ms.n and not located["log_size"].n and anchors is None:
        return skipped(name, f"{shape}: nothing to compare at {fmt_size(main.size)}; {anchor_text}", **ev)
    status, sev = verdict(fail, warn)
    finding = ("; ".join(problems) + f" ({shape}; {anchor_text})") if problems else f"{shape}; {anchor_text}"
    fix = ""
    if status != "ok":
        fix = ("serve at the resolution the model was trained at so objects have their trained size, or retrain on "
               "data with these object sizes" if size_bias else "retrain or fine-tune on data with these box shapes")
        if anchors is not None and ev.get("bpr_model", 1) < opts.bpr_warn:
            fix += "; retrain with the k-means anchors in evidence.anchors_kmeans (YOLOv5: autoanchor)"
    return Check(name, status, sev, finding, ev, fix)
