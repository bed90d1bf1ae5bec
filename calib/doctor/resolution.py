"""Check 1, resolution: serving size vs native size."""
from __future__ import annotations


import numpy as np

from ..artifact import SCALE_X, SCALE_Y
from .report import Check, DoctorOptions, fmt_number, fmt_size, verdict
from .runs import Run


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


def check_resolution(main: Run, other: Run | None, note: str, native: tuple[int, int] | None,
                     serve: tuple[int, int], opts: DoctorOptions) -> Check:
    name = "resolution"
    ev = {"serve_size": list(serve), "native_size": list(native) if native else None, **_scale_evidence(main)}
    if other is None:
        scale = ev["letterbox_scale_median"]
        up, down = scale > 2.0, scale < 0.25
        status, sev = verdict(False, up or down, "low")
        what = (f"images are upscaled {scale:.2f}x on median into the input: the model sees blurrier objects than at capture"
                if up else f"images are shrunk to {scale:.2f}x on median: objects lose {1 / scale:.0f}x in size, small ones vanish"
                if down else f"images enter the {fmt_size(main.size)} input at a median scale of {scale:.2f}")
        fix = ("capture or export at a resolution closer to the model input, or fit detcal on images as served"
               if up else "serve at a larger input (re-export) or tile large images" if down else "")
        return Check(name, status, sev, f"{what}; {note}" if note else what, ev, fix)
    ref, srv = (other, main) if not main.emulated and tuple(main.size) == tuple(serve) else (main, other)
    a, b = _key_metrics(ref.metrics), _key_metrics(srv.metrics)
    ev.update({"at_native": a, "at_serving": b, "serving_emulated": srv.emulated, "conf": opts.conf})
    d_recall = (a["recall"] or 0.0) - (b["recall"] or 0.0)
    d_dece = (b["dece"] or 0.0) - (a["dece"] or 0.0)
    fa, fb = a["fp_per_negative_image"], b["fp_per_negative_image"]
    d_fp = (fb - fa) if fa is not None and fb is not None else 0.0
    fp_base = fa or 0.0
    ev.update({"recall_drop": d_recall, "dece_increase": d_dece, "fp_per_negative_increase": d_fp})
    fail = d_recall >= opts.recall_gap_fail or d_dece >= opts.dece_gap_fail or d_fp >= max(0.5, fp_base)
    warn = d_recall >= opts.recall_gap_warn or d_dece >= opts.dece_gap_warn or d_fp >= max(0.1, 0.5 * fp_base)
    status, sev = verdict(fail, warn)
    how = "emulated in the fixed input" if srv.emulated else "run for real"
    finding = (f"serving at {fmt_size(serve)} ({how}) vs native {fmt_size(native)}: recall {fmt_number(b['recall'])} vs {fmt_number(a['recall'])}, "
               f"D-ECE {fmt_number(b['dece'])} vs {fmt_number(a['dece'])}, FP/negative image {fmt_number(fb)} vs {fmt_number(fa)} (scores > {opts.conf:g})")
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
