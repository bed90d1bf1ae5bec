"""Fit throughput: matching + calibrator + rejection thresholds on synthetic detections.

    python benchmarks/bench_fit.py [--detections 500000] [--images 5000] [--classes 80]

No model inference: detections are generated around ground-truth boxes (half of them near a
box, the rest clutter), scores drawn so that they are miscalibrated, 30% negative images.
Prints seconds and detections per second per stage. Issue target: < 2 s for 500,000
detections over 5,000 images on a 2-core machine (matching + fitting, one calibrator).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from calib.calibrators import make_calibrator
from calib.cross_validation import select_calibrator
from calib.matching import match_flat
from calib.thresholds import fit_rejection_thresholds_matched


def synthetic(n_det: int, n_img: int, n_cls: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    neg = rng.random(n_img) < 0.3
    gt_per_img = np.where(neg, 0, rng.integers(1, 20, n_img))
    gt_img = np.repeat(np.arange(n_img), gt_per_img)
    g = gt_img.size
    xy = rng.uniform(0, 600, (g, 2))
    wh = rng.uniform(10, 200, (g, 2))
    gt_boxes = np.concatenate([xy, xy + wh], 1)
    gt_cls = rng.integers(0, n_cls, g)
    near = rng.random(n_det) < 0.5
    src = rng.integers(0, g, n_det)
    det_img = np.where(near, gt_img[src], rng.integers(0, n_img, n_det))
    jitter = rng.normal(0, 8, (n_det, 4))
    rand_xy = rng.uniform(0, 600, (n_det, 2))
    rand_boxes = np.concatenate([rand_xy, rand_xy + rng.uniform(10, 200, (n_det, 2))], 1)
    det_boxes = np.where(near[:, None], gt_boxes[src] + jitter, rand_boxes)
    det_cls = np.where(near & (rng.random(n_det) < 0.9), gt_cls[src], rng.integers(0, n_cls, n_det))
    z = np.where(near, rng.normal(1.5, 1.5, n_det), rng.normal(-2.0, 1.5, n_det))
    scores = 1 / (1 + np.exp(-2.5 * z))          # over-confident
    order = np.argsort(det_img, kind="stable")
    return (det_img[order], det_boxes[order], scores[order], det_cls[order], gt_img, gt_boxes, gt_cls)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detections", type=int, default=500_000)
    ap.add_argument("--images", type=int, default=5_000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--sizes", default="", help="comma-separated detection counts to sweep, e.g. 10000,100000,1000000")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s] or [args.detections]
    print(f"{'detections':>10} {'match s':>8} {'platt s':>8} {'isotonic s':>10} {'thresh s':>8} {'total s':>8} {'det/s':>11} {'auto 5-fold s':>13}")
    for n in sizes:
        n_img = max(args.images * n // args.detections, 10) if args.sizes else args.images
        det_img, det_boxes, scores, det_cls, gt_img, gt_boxes, gt_cls = synthetic(n, n_img, args.classes)
        matched, t_match = timed(lambda: match_flat(det_img, det_boxes, scores, det_cls, gt_img, gt_boxes, gt_cls,
                                                    n_images=n_img, iou_threshold=0.5, num_classes=args.classes))
        platt, t_platt = timed(lambda: make_calibrator("platt_per_class", args.classes).fit(matched.scores, matched.classes, matched.is_tp))
        iso, t_iso = timed(lambda: make_calibrator("isotonic_per_class", args.classes).fit(matched.scores, matched.classes, matched.is_tp))
        cal = iso.transform(matched.scores, matched.classes)
        _, t_thr = timed(lambda: fit_rejection_thresholds_matched(matched, scores=cal, base_threshold=0.001))
        total = t_match + t_iso + t_thr
        _, t_auto = timed(lambda: select_calibrator(matched.scores, matched.classes, matched.is_tp, matched.image_index, args.classes))
        print(f"{n:>10} {t_match:>8.3f} {t_platt:>8.3f} {t_iso:>10.3f} {t_thr:>8.3f} {total:>8.3f} {n / total:>11,.0f} {t_auto:>13.2f}")
    print("total = matching + isotonic fit + rejection thresholds (platt s shown beside it); "
          "auto = 5-fold CV over every calibrator + final fit")


if __name__ == "__main__":
    main()
