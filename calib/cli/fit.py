"""`detcal fit`: the command line over `calib.fitting.fit`."""
from __future__ import annotations

import argparse
import sys

from .args import (add_model_data_args, add_names_arg, add_preprocess_args, non_negative_int, positive_int,
                   preprocess_from_args)

CALIBRATOR_CHOICES = ("auto", "identity", "temperature", "temperature_per_class", "platt_per_class", "isotonic_per_class",
                      "platt_box")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fit", help="fit calibration and rejection thresholds on a validation set",
        description="Run the raw model over a deployment validation set (positive and negative scenes), "
                    "match detections to ground truth, fit a monotone calibrator and per-class "
                    "negative-scene rejection thresholds, and write calibration.json plus a report.")
    add_model_data_args(p, split_default="val")
    add_preprocess_args(p)
    p.add_argument("--input-layout", choices=["NCHW", "NHWC"], default=None,
                   help="the image input's layout where its declared dims leave it open (default: from the dims, "
                        "else the metadata, else NCHW; recorded in the artifact)")
    p.add_argument("--out", default="calibration.json", help="artifact path (default: calibration.json); the report goes to <out stem>_report/")
    p.add_argument("--calibrator", default="auto", choices=CALIBRATOR_CHOICES,
                   help="calibrator; auto picks by held-out log-loss on the detections above the fitting floor, keeping identity unless held-out log-loss and D-ECE both improve (default: auto)")
    p.add_argument("--max-negative-rate", type=float, default=0.01,
                   help="target share of negative images with any surviving detection, certified out of sample: a "
                        "threshold family shaped on part of the images is tested on held-out negative images "
                        "(fixed-sequence, exact binomial; default: 0.01)")
    p.add_argument("--threshold-shape", choices=["auto", "per-class", "global"], default="auto",
                   help="the certified thresholds: per-class, one global level, or auto = per-class unless it "
                        "loses more than a recall point to global on held-out folds (default: auto)")
    p.add_argument("--operating-point", choices=["baseline", "f1", "max-recall"], default="baseline",
                   help="where thresholds start before negative scenes raise them: baseline = --baseline-conf on the raw "
                        "scale, mapped through the calibrator (keeps today's detections; default); f1 = per-class "
                        "F1-optimal on positive images; max-recall = the lowest thresholds that certify the target")
    p.add_argument("--fit-floor", type=float, default=None,
                   help="raw score above which the calibrator is fitted and chosen (default: the per-class thresholds the "
                        "operating-point rule picks on the raw scores before the negative scenes raise them, i.e. the "
                        "detections users keep today)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the negative-scene guarantee (default: 0.95)")
    p.add_argument("--match-iou", type=float, default=0.5, help="IoU to count a detection as a true positive (default: 0.5)")
    p.add_argument("--base-conf", type=float, default=0.001, help="raw score floor for collecting detections (default: 0.001)")
    p.add_argument("--baseline-conf", type=float, default=0.25, help="the raw operating threshold users run today, for before/after (default: 0.25)")
    p.add_argument("--iou", type=float, default=None,
                   help="NMS IoU threshold (default: 0.7; detr heads need no NMS and get none unless --iou is given)")
    p.add_argument("--max-det", type=positive_int, default=300, help="detections kept per image (default: 300)")
    p.add_argument("--pre-nms-top-k", type=positive_int, default=3000, help="candidates entering NMS (default: 3000, < 3840 for TensorRT)")
    p.add_argument("--multi-label", action="store_true", help="keep every class of a box above its threshold, not only the best")
    p.add_argument("--folds", type=int, default=5, help="k for the k-fold (by image) cross-validation of 'after' numbers (default: 5)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for the fold split (default: 0)")
    add_names_arg(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from calib.atomic import removing_new_empty_dirs
    from calib.data import read_names_file
    from calib.errors import DetcalError
    from calib.fitting import FitOptions, fit, report_dir_for
    from calib.artifact import PostprocessConfig

    pre = preprocess_from_args(args)
    try:
        post = PostprocessConfig(iou_threshold=0.7 if args.iou is None else args.iou, max_det=args.max_det, pre_nms_top_k=args.pre_nms_top_k,
                                 multi_label=args.multi_label)
    except ValueError as exc:
        raise DetcalError(str(exc)) from None
    opts = FitOptions(
        calibrator=args.calibrator, max_negative_rate=args.max_negative_rate, confidence=args.confidence,
        match_iou=args.match_iou, base_conf=args.base_conf, baseline_conf=args.baseline_conf,
        folds=args.folds, seed=args.seed, postprocess=post, operating_point=args.operating_point,
        threshold_shape=args.threshold_shape,
        nms_on_queries=args.iou is not None,
        fit_floor=args.fit_floor,
    )
    out = Path(args.out)
    with removing_new_empty_dirs(out.parent, report_dir_for(out)):     # a failed fit leaves no empty folder
        result = fit(
            args.model, args.data, split=args.split, out=args.out, preprocess=pre, options=opts, layout=args.layout,
            imgsz=args.imgsz, batch_size=args.batch, threads=args.threads, names=read_names_file(args.names), images_dir=args.images,
            progress=not args.quiet, input_layout=args.input_layout,
        )
    print(result.summary)
    if not result.thresholds.certified_:
        print(f"warning: the negative-scene target was not certified: {result.thresholds.note}", file=sys.stderr)
    return 0
