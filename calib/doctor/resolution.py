"""Check 1, resolution: serving size vs native size, on the same images and labels.

With two runs (the serving size and the native size, run for real or emulated), every number
is a paired difference on the same images, with an image-bootstrap interval:

- recall at the threshold, overall and by object-size bucket (COCO small < 32^2, medium < 96^2,
  large; label area in original-image px): native - serving;
- D-ECE of the detections above the threshold: serving - native;
- false positives above the threshold per negative image: serving - native.

A gap is flagged only when its interval excludes 0 (the data support it) and the estimate is
beyond the tolerance (recall 0.05 warns, 0.15 fails, per bucket too when it has at least
``min_gt_bucket`` labels; D-ECE 0.03 / 0.08; FP per negative image max(0.1, 50%) / max(0.5, 100%)
of the native rate). Without a second size: the median letterbox scale (> 2 upscaled, < 0.25
shrunk 4x+) is a low warn, and recall by size bucket is reported.
"""
from __future__ import annotations

import numpy as np

from ..artifact import SCALE_X, SCALE_Y
from .report import Check, DoctorOptions, fmt_number, fmt_size, verdict
from .runs import Run
from .stats import (SIZE_BUCKETS, Estimate, gt_buckets, gt_hits, paired_dece_difference, paired_mean_difference,
                    paired_recall_difference, recall_by_group)


def _scale_evidence(run: Run) -> dict:
    rows = run.collected.rows
    scale = np.minimum(rows[:, SCALE_X], rows[:, SCALE_Y])
    sizes = np.asarray(run.collected.image_sizes, dtype=np.float64)
    return {
        "image_long_side_median": float(np.median(sizes.max(axis=1))),
        "image_short_side_median": float(np.median(sizes.min(axis=1))),
        "n_distinct_image_sizes": len(set(run.collected.image_sizes)),
        "letterbox_scale_median": float(np.median(scale)),
        "letterbox_scale_min": float(scale.min()),
        "letterbox_scale_max": float(scale.max()),
        "share_upscaled_over_2x": float(np.mean(scale > 2.0)),
    }


def _key_metrics(m: dict) -> dict:
    return {k: m.get(k) for k in ("recall", "precision", "dece", "fp_per_negative_image", "ap50")}


def _kept(run: Run, conf: float):
    m = run.matched
    k = m.scores > conf
    return m.scores[k], m.is_tp[k], m.image_index[k]


def _fp_per_negative(run: Run, conf: float) -> np.ndarray:
    m = run.matched
    k = (m.scores > conf) & ~m.is_tp
    return np.bincount(m.image_index[k], minlength=m.n_images)[m.negative_image_mask].astype(np.float64)


def _pts(e: Estimate) -> str:
    return e.text("{:+.3f}")


def recall_by_size(run: Run, opts: DoctorOptions) -> dict:
    """{bucket: Estimate} recall at opts.conf per COCO size bucket of one run."""
    m = run.matched
    est = recall_by_group(gt_hits(m, opts.conf), m.gt_image_index, gt_buckets(run.collected.gt_boxes_xyxy), 3,
                          m.n_images, n_boot=opts.bootstrap, level=opts.interval_level, seed=opts.seed)
    return dict(zip(SIZE_BUCKETS, est))


def check_resolution(main: Run, other: Run | None, note: str, native: tuple[int, int] | None,
                     serve: tuple[int, int], opts: DoctorOptions) -> Check:
    name = "resolution"
    ev = {"serve_size": list(serve), "native_size": list(native) if native else None, **_scale_evidence(main)}
    if other is None:
        scale = ev["letterbox_scale_median"]
        up, down = scale > 2.0, scale < 0.25
        status, sev = verdict(False, up or down, "low")
        rec = recall_by_size(main, opts)
        ev["recall_by_size"] = {k: v.to_dict() for k, v in rec.items()}
        what = (f"images are upscaled {scale:.2f}x on median into the input: the model sees blurrier objects than at capture"
                if up else f"images are shrunk to {scale:.2f}x on median: objects lose {1 / scale:.0f}x in size, small ones vanish"
                if down else f"images enter the {fmt_size(main.size)} input at a median scale of {scale:.2f}")
        fix = ("capture or export at a resolution closer to the model input, or fit detcal on images as served"
               if up else "serve at a larger input (re-export) or tile large images" if down else "")
        what += ("; recall by size (scores > " + f"{opts.conf:g}): "
                 + ", ".join(f"{k} {v.value:.2f} of {v.n}" for k, v in rec.items() if v.n)) if any(v.n for v in rec.values()) else ""
        return Check(name, status, sev, f"{what}; {note}" if note else what, ev, fix)
    ref, srv = (other, main) if not main.emulated and tuple(main.size) == tuple(serve) else (main, other)
    if list(ref.collected.sample_indices) != list(srv.collected.sample_indices):
        raise RuntimeError("resolution: the two runs read different images")   # both read the same split
    a, b = _key_metrics(ref.metrics), _key_metrics(srv.metrics)
    kw = dict(n_boot=opts.bootstrap, level=opts.interval_level, seed=opts.seed)
    mr, n_img = ref.matched, ref.matched.n_images
    h_ref, h_srv = gt_hits(mr, opts.conf), gt_hits(srv.matched, opts.conf)
    gi = mr.gt_image_index
    buckets = gt_buckets(ref.collected.gt_boxes_xyxy)
    overall = paired_recall_difference(h_ref, h_srv, gi, np.zeros(len(gi), np.int64), 1, n_img, **kw)[0]
    by_size = dict(zip(SIZE_BUCKETS, paired_recall_difference(h_ref, h_srv, gi, buckets, 3, n_img, **kw)))
    d_dece = paired_dece_difference(_kept(srv, opts.conf), _kept(ref, opts.conf), n_img, **kw)
    fp_r, fp_s = _fp_per_negative(ref, opts.conf), _fp_per_negative(srv, opts.conf)
    d_fp = paired_mean_difference(fp_s, fp_r, **kw)
    fp_base = float(fp_r.mean()) if fp_r.size else 0.0
    ev.update({"at_native": a, "at_serving": b, "serving_emulated": srv.emulated, "conf": opts.conf,
               "compared": (f"the same {n_img} images and {len(gi)} labels at both sizes; paired differences with "
                            f"{opts.interval_level:.0%} intervals by image bootstrap x{opts.bootstrap}"),
               "recall_drop": overall.to_dict(), "recall_drop_by_size": {k: v.to_dict() for k, v in by_size.items()},
               "dece_increase": d_dece.to_dict(), "fp_per_negative_increase": d_fp.to_dict()})
    supported = lambda e: e.n > 0 and e.excludes(0.0) and e.low > 0   # noqa: E731  (worse at the serving size)
    problems, fail, warn = [], False, False
    recall_groups = [("all sizes", overall)] + [(k, v) for k, v in by_size.items() if v.n >= opts.min_gt_bucket]
    for label, e in recall_groups:
        if supported(e) and e.value >= opts.recall_gap_warn:
            fail |= e.value >= opts.recall_gap_fail
            warn = True
            problems.append(f"recall drop ({label})")
    if supported(d_dece) and d_dece.value >= opts.dece_gap_warn:
        fail |= d_dece.value >= opts.dece_gap_fail
        warn = True
        problems.append("D-ECE rise")
    if supported(d_fp) and d_fp.value >= max(0.1, 0.5 * fp_base):
        fail |= d_fp.value >= max(0.5, fp_base)
        warn = True
        problems.append("FP per negative image rise")
    status, sev = verdict(fail, warn)
    how = "emulated in the fixed input" if srv.emulated else "run for real"
    sizes = ", ".join(f"{k} {_pts(v)}" for k, v in by_size.items() if v.n)
    fp_text = (f"FP/negative image {float(fp_s.mean()):.3f} vs {fp_base:.3f}, rise {_pts(d_fp)}" if fp_r.size
               else "no negative images")
    finding = (f"serving at {fmt_size(serve)} ({how}) vs native {fmt_size(native)} on the same {n_img} images "
               f"(scores > {opts.conf:g}; {opts.interval_level:.0%} image-bootstrap intervals): recall "
               f"{fmt_number(b['recall'])} vs {fmt_number(a['recall'])}, drop {_pts(overall)}, by size {sizes}; "
               f"D-ECE {fmt_number(b['dece'])} vs {fmt_number(a['dece'])}, rise {_pts(d_dece)}; {fp_text}")
    if problems:
        finding += f"; supported by the data and beyond tolerance: {', '.join(problems)}"
    if note:
        finding += f"; {note}"
    if status == "ok":
        fix = ""
    elif srv.emulated:
        fix = (f"feed frames into the {fmt_size(native)} input without shrinking them to {fmt_size(serve)} first; if you must serve "
               f"at {fmt_size(serve)}, re-export the model at that size and fit detcal on it (detcal fit --model M_{serve[0]}.onnx)")
    else:
        fix = (f"serve at the native size {fmt_size(native)}, or fit and evaluate detcal at the serving size "
               f"(detcal fit --imgsz {serve[0]}x{serve[1]})")
    return Check(name, status, sev, finding, ev, fix)
