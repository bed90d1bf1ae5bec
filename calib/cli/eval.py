"""`detcal eval`: the command line over `calib.evaluate.evaluate`."""
from __future__ import annotations

import argparse
import sys

from .args import add_model_data_args, add_names_arg, add_preprocess_args, unit_float

# the defaults of calib.evaluate (AP_FLOOR, DEFAULT_CONF), repeated here so that `--help` does
# not import the evaluator; tests/test_fit_cli.py checks that they agree
DEFAULT_CONF = 0.25
AP_FLOOR = 0.001


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="compare the raw and the patched model on held-out images",
        description="Run the raw model (numpy reference post-processing, identity calibration) and the patched "
                    "model on the same letterboxed images, and report AP50, AP50:95, precision and recall at the "
                    "operating point, D-ECE, LaECE_0, false positives on negative images and latency, side by "
                    "side: a table on stdout, eval.json and PNG plots in --out. With --calibration (and no or "
                    "also --patched) the reference pipeline with that calibration is evaluated too.")
    add_model_data_args(p, split_default="test")
    p.add_argument("--patched", help="the patched model from `detcal patch` (.detcal.onnx)")
    p.add_argument("--calibration", help="calibration.json: evaluates the reference pipeline with it, "
                                         "and gives the preprocessing when there is no --patched")
    p.add_argument("--conf", type=unit_float, default=DEFAULT_CONF,
                   help=f"the raw model's operating score threshold (default: {DEFAULT_CONF})")
    p.add_argument("--ap-floor", type=unit_float, default=AP_FLOOR,
                   help=f"raw score floor for the raw model's AP (default: {AP_FLOOR})")
    p.add_argument("--match-iou", type=unit_float, default=0.5, help="IoU to count a detection as a true positive (default: 0.5)")
    p.add_argument("--out", default="eval", help="output folder for eval.json and the plots (default: eval)")
    add_names_arg(p)
    add_preprocess_args(p)
    # not given = taken from the patched model's metadata, else the calibration artifact, else the defaults
    p.set_defaults(resize=None, pad_value=None, channel_order=None, mean=None, std=None, placement=None, scale=None,
                   run=run)
    return p


def run(args) -> int:
    from calib.atomic import removing_new_empty_dirs
    from calib.data import read_names_file
    from calib.evaluate import evaluate, format_eval_summary

    explicit = {"resize": args.resize, "pad_value": args.pad_value, "channel_order": args.channel_order,
                "mean": args.mean, "std": args.std, "placement": args.placement, "scale": args.scale}
    with removing_new_empty_dirs(args.out):          # a failed or interrupted eval leaves no empty folder
        result = evaluate(
            args.model, args.data, patched=args.patched, calibration=args.calibration, split=args.split,
            conf=args.conf, out=args.out, preprocess=explicit, layout=args.layout, imgsz=args.imgsz,
            batch_size=args.batch, threads=args.threads, names=read_names_file(args.names), images_dir=args.images,
            match_iou=args.match_iou, ap_floor=args.ap_floor, progress=not args.quiet,
        )
    print(format_eval_summary(result))
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
