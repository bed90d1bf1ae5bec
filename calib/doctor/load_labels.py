"""Checks 6 and 7: nms_load (candidates and post-processing time), labels (edges, range, imbalance)."""
from __future__ import annotations

import time

import numpy as np

from ..data import Dataset
from ..errors import DetcalError
from ..images import read_image_rgb
from ..model_info import ModelInfo
from ..pipeline import postprocess
from ..progress import Progress
from .report import Check, DoctorOptions, fmt_number, verdict
from .runs import Run


def _nice_cap(x: float) -> int:
    for v in (100, 200, 300, 500, 1000, 1500, 2000, 3000):
        if v >= x:
            return v
    return 3000


def check_nms_load(main: Run, dataset: Dataset, info: ModelInfo, opts: DoctorOptions, progress: bool) -> Check:
    name = "nms_load"
    runner = main.runner
    counts = np.array([runner.candidates.get(i, 0) for i in main.collected.sample_indices], dtype=np.float64)
    mean, p99, mx = float(counts.mean()), float(np.percentile(counts, 99)), float(counts.max())
    ev = {"conf": opts.conf, "candidates_mean": mean, "candidates_p99": p99, "candidates_max": mx,
          "n_images": len(counts), "n_outputs": int(np.prod([d for d in info.output_shape[1:] if isinstance(d, int)]))}
    # time model vs post-processing on a subsample, one image per call where the batch is dynamic
    n = min(opts.timing_images, len(main.collected))
    picks = np.linspace(0, len(main.collected) - 1, n).astype(int)
    t_model, t_post = [], []
    thr = np.full(max(main.matched.num_classes, 1), opts.conf)
    post_cfg = opts.postprocess
    with Progress(n, "timing post-processing", enabled=progress) as bar:
        for k in picks:
            sample = dataset.samples[main.collected.sample_indices[k]]
            try:
                img = read_image_rgb(sample.image_path)
            except DetcalError:
                continue
            x, row = runner.prepare(img)
            xb = np.repeat(x[None], runner.batch_size if not info.dynamic_batch else 1, axis=0)
            t0 = time.perf_counter()
            raw = runner.run_tensor(xb)[:1]
            t1 = time.perf_counter()
            postprocess(raw, info.layout, row[None], None, thr, post_cfg)
            t2 = time.perf_counter()
            t_model.append((t1 - t0) / xb.shape[0])
            t_post.append(t2 - t1)
            bar.update(1)
    if t_model:
        tm, tp = float(np.median(t_model)), float(np.median(t_post))
        share = tp / (tm + tp) if tm + tp > 0 else 0.0
        ev.update({"model_ms_median": tm * 1e3, "postprocess_ms_median": tp * 1e3, "postprocess_share": share,
                   "n_timed": len(t_model), "postprocess": "numpy reference: decode, threshold, class-aware NMS"})
    else:
        share = 0.0
    end2end = info.layout == "end2end"
    cap = _nice_cap(max(2 * p99, 1))
    ev["suggested_pre_nms_top_k"] = None if end2end else cap
    if end2end:
        finding = (f"the model selects its detections itself (end2end): {mean:.1f} per image above {opts.conf:g} "
                   f"(p99 {p99:.0f}); post-processing takes {share:.0%} of the time")
        return Check(name, "ok", "none", finding, ev)
    slow_post = share > opts.post_share_warn and ev.get("postprocess_ms_median", 0.0) >= opts.post_ms_floor
    warn = p99 > opts.candidates_p99_warn or mean > opts.candidates_mean_warn or slow_post
    status, sev = verdict(False, warn)
    finding = (f"{mean:.1f} candidates per image above {opts.conf:g} before NMS (p99 {p99:.0f}, max {mx:.0f}); "
               f"post-processing takes {share:.0%} of model + post-processing time; a pre-NMS cap of {cap} keeps "
               f"every candidate of 99% of images")
    fix = (f"cap the candidates entering NMS at {cap} (detcal fit --pre-nms-top-k {cap}), raise the confidence "
           "threshold after calibration, or let the patched model run NMS in the graph") if warn else ""
    return Check(name, status, sev, finding, ev, fix)


def check_labels(dataset: Dataset, main: Run, opts: DoctorOptions) -> Check:
    name = "labels"
    rep = dataset.report
    c = main.collected
    n_boxes = edge = 0
    for pos, si in enumerate(c.sample_indices):
        s = dataset.samples[si]
        if s.n_boxes == 0:
            continue
        w, h = c.image_sizes[pos]
        tol = np.array([1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h])
        b = s.gt_boxes_xyxy_norm
        touch = (b[:, 0] <= tol[0]) | (b[:, 1] <= tol[1]) | (b[:, 2] >= 1 - tol[2]) | (b[:, 3] >= 1 - tol[3])
        n_boxes += len(b)
        edge += int(touch.sum())
    counts = np.bincount(np.concatenate([s.gt_classes for s in dataset.samples] or [np.zeros(0, np.int64)]),
                         minlength=dataset.num_classes)
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) else None
    empty = [dataset.names[i] for i in np.flatnonzero(counts == 0)]
    edge_share = edge / n_boxes if n_boxes else 0.0
    ev = {"n_images": rep.n_images, "n_boxes": rep.n_boxes, "n_touching_edge": edge, "share_touching_edge": edge_share,
          "n_out_of_range_clipped": rep.n_clipped_boxes, "n_zero_size_dropped": rep.n_dropped_zero_size,
          "n_duplicates_dropped": rep.n_duplicate_boxes, "n_missing_label_files": rep.n_missing_label_files,
          "boxes_per_class": {dataset.names[i]: int(counts[i]) for i in range(len(counts))},
          "imbalance_max_over_min": imbalance, "classes_without_boxes": empty, "details": list(rep.details)}
    problems, sev = [], "none"
    if edge_share > opts.edge_share_warn:
        problems.append(f"{edge_share:.1%} of boxes touch the image edge (truncated objects)")
        sev = "medium"
    bad = rep.n_clipped_boxes + rep.n_dropped_zero_size
    if bad:
        problems.append(f"{rep.n_clipped_boxes} boxes reach outside the image (clipped), {rep.n_dropped_zero_size} have no area")
        sev = "medium"
    if (imbalance or 0) > opts.imbalance_warn or (empty and rep.n_boxes):
        problems.append(f"class imbalance {imbalance:.0f}:1" + (f", no boxes for {', '.join(empty[:5])}" if empty else ""))
        sev = sev if sev != "none" else "low"
    status = "warn" if problems else "ok"
    finding = "; ".join(problems) if problems else (
        f"{rep.n_boxes} boxes, {edge_share:.1%} touching the edge, none out of range, imbalance "
        f"{fmt_number(imbalance, '{:.1f}')}:1")
    fixes = []
    if edge_share > opts.edge_share_warn:
        fixes.append("check that truncated objects are labelled consistently (or crop/pad the frames); they match "
                     "poorly and distort calibration")
    if bad:
        fixes.append("fix the label export (coordinates must be normalised to [0, 1] of the oriented image)")
    if (imbalance or 0) > opts.imbalance_warn or empty:
        fixes.append("add images of the rare classes; per-class calibration of rare classes falls back to the global fit")
    return Check(name, status, sev, finding, ev, "; ".join(fixes))
