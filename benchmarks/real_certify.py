"""Negative-scene certification on the real YOLOv8n (int8) in ../shared/real: today's in-sample
thresholds vs the out-of-sample certification (calib.certify), fitted on val, measured on test.

Not a unit test. Runs the model once per split and caches the matched detections in the
temporary folder:

    python benchmarks/real_certify.py [--collect-only]      # DETCAL_SHARED=... where shared/ is elsewhere

Scores are the raw model's (identity calibrator), so the thresholds of both procedures and the
global baseline are on the same scale.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared")).resolve() / "real"
MODEL = REAL / "models" / "yolov8n_coco_int8.onnx"
DATA = REAL / "coco_train" / "data.yaml"
CACHE = Path(tempfile.gettempdir()) / "detcal_real_certify"

MATCHED_FIELDS = ("image_index", "scores", "classes", "is_tp", "iou", "gt_index", "gt_image_index",
                  "gt_classes", "n_gt_per_class", "negative_image_mask")


def matched_split(split: str):
    """MatchedDetections of the raw model on one split (cached as npz)."""
    from calib.matching import MatchedDetections

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{split}.npz"
    if not path.exists():
        from calib.collect import collect_detections
        from calib.data import load_dataset
        from calib.fitting import match_collected
        from calib.model_info import read_model_info
        from calib.artifact import Preprocess
        from calib.runner import resolve_input_size

        dataset = load_dataset(DATA, split)
        info = read_model_info(MODEL, num_classes=dataset.num_classes)
        size = resolve_input_size(info, 640)
        pre = Preprocess("letterbox", 114, "RGB")
        col = collect_detections(dataset, info, pre, size, num_classes=dataset.num_classes, base_conf=0.001,
                                 progress=False)
        m = match_collected(col, dataset.num_classes, 0.5)
        np.savez(path, n_images=m.n_images, num_classes=m.num_classes,
                 **{k: getattr(m, k) for k in MATCHED_FIELDS})
    z = np.load(path)
    return MatchedDetections(**{k: z[k] for k in MATCHED_FIELDS}, n_images=int(z["n_images"]),
                             num_classes=int(z["num_classes"]), iou_threshold=0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.03])
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--baseline-conf", type=float, default=0.25)
    args = ap.parse_args(argv)
    if not MODEL.exists():
        print(f"skipped: {MODEL} is absent")
        return 0
    val, test = matched_split("val"), matched_split("test")
    print(f"val: {val.n_images} images ({val.n_negative_images} negative), {val.n_detections} detections; "
          f"test: {test.n_images} images ({test.n_negative_images} negative), {test.n_detections} detections")
    if args.collect_only:
        return 0
    print(table(val, test, args.rates, args.confidence, args.baseline_conf))
    return 0


def _cp_two_sided(k: int, n: int, confidence: float = 0.95):
    from scipy.stats import beta

    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def table(val, test, rates, confidence: float, base: float) -> str:
    from calib.bootstrap import metric_intervals
    from calib.certify import CertifiedThresholds, ScoredImages, global_baseline
    from calib.metrics import negative_image_rate, precision_recall
    from calib.thresholds import fit_rejection_thresholds_matched

    lines_note = ("test rate: realised on the test split's negative images, two-sided 95% Clopper-Pearson interval; "
                  "global@same test rate: the best single raw threshold in hindsight on test at the same test rate; "
                  "global@same val rate: the single threshold a user would pick on val at the same val rate, "
                  "recall measured on test")

    v, t = ScoredImages.from_matched(val), ScoredImages.from_matched(test)
    n_test_neg = test.n_negative_images
    head = (f"{'target':>6} {'procedure':<22} {'cert. bound':>11} {'val rate':>9} {'test rate [95% CP]':>24} "
            f"{'test recall [boot 95%]':>24} {'global@same test rate':>22} {'global@same val rate':>21}")
    lines = [f"raw YOLOv8n int8, identity calibration, thresholds start at the operating point {base} "
             f"(confidence {confidence})", head, "-" * len(head)]
    for rate in rates:
        fits = []
        old = fit_rejection_thresholds_matched(val, max_negative_rate=rate, confidence=confidence,
                                               base_threshold=base)
        fits.append(("today (in-sample)", old.score_, old.bound_, old.raw_rate_))
        for shape in ("per-class", "global", "auto"):
            r = CertifiedThresholds(rate, confidence, shape=shape).fit(v, base_threshold=base)
            name = f"ours {shape}" + (f" ->{r.shape_used_}" if shape == "auto" else "")
            fits.append((name, r.score_, r.bound_, r.empirical_rate_))
        for name, thr, bound, val_rate in fits:
            g_val = global_baseline(v, negative_image_rate(val, thr))  # picked by hand on the same val images
            test_rate = negative_image_rate(test, thr)
            k = int(round(test_rate * n_test_neg))
            lo, hi = _cp_two_sided(k, n_test_neg)
            rec = precision_recall(test, thr).recall
            iv = metric_intervals(test, thresholds=thr, n_boot=1000, statistics=("recall",))["recall"]
            g = global_baseline(t, test_rate)
            lines.append(f"{rate:>6.2%} {name:<22} {bound:>11.2%} {val_rate:>9.2%} "
                         f"{test_rate:>7.2%} [{lo:.2%}, {hi:.2%}]".ljust(0) +
                         f"{'':>2}{rec:>7.3f} [{iv.low:.3f}, {iv.high:.3f}]{'':>4}{g['recall']:>7.3f} (t={g['threshold']:.3f})"
                         f"{'':>4}{precision_recall(test, g_val['threshold']).recall:>7.3f} (t={g_val['threshold']:.3f})")
        recs = [precision_recall(test, CertifiedThresholds(rate, confidence, shape="per-class", seed=sd).fit(v, base).score_).recall
                for sd in range(10)]
        lines.append(f"{'':>6} ours per-class, split seeds 0-9: test recall mean {np.mean(recs):.3f}, "
                     f"min {np.min(recs):.3f}, max {np.max(recs):.3f}")
    return "\n".join(lines + [lines_note])


if __name__ == "__main__":
    raise SystemExit(main())
