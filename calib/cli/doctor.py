"""`detcal doctor`: the command line over `calib.doctor.diagnose`."""
from __future__ import annotations

import argparse

from .args import add_images_arg, add_preprocess_args, add_run_args, parse_size, preprocess_from_args, unit_float


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor", help="run the production debug checklist on a model and a labelled split",
        description="Check a raw exported detector on your own data: resolution mismatch, box shape fit and anchors, "
                    "detections in the letterbox bars, calibration (D-ECE), confident false positives on uniform "
                    "surfaces, NMS load and label sanity, and with --reference-model a quantized model against its float export. "
                    "Each finding says what it compared and how sure it is (intervals by image bootstrap). Prints a "
                    "report ordered by severity, writes doctor.json and PNGs; exit code 0 when nothing is flagged, 1 when something is, 2 on bad input.")
    p.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    p.add_argument("--data", required=True, help="labelled images: an Ultralytics data YAML, an images/ + labels/ folder, or a COCO JSON")
    p.add_argument("--split", default="val", help="dataset split to use from a YAML (default: val)")
    add_images_arg(p)
    p.add_argument("--serve-size", type=parse_size, help="the size the model is served at, N or HxW (default: the model's input)")
    p.add_argument("--native-size", type=parse_size, help="the size it was trained/exported at, for dynamic models without imgsz metadata")
    p.add_argument("--native-model", help="the same detector exported at its training size, when --model is a fixed-size "
                                          "export at another size: the resolution check runs both")
    p.add_argument("--reference-model", help="the float export of the same network, when --model is quantized (int8): "
                                             "adds the quantization check (recall by size and class, score shift, "
                                             "activation ranges)")
    p.add_argument("--out", default="doctor", help="folder for doctor.json and the PNGs (default: doctor/)")
    p.add_argument("--conf", type=unit_float, default=0.25, help="the confidence threshold deployed today (default: 0.25)")
    p.add_argument("--iou", type=unit_float, default=0.7, help="NMS IoU threshold deployed today (default: 0.7)")
    add_run_args(p)
    p.add_argument("--json", action="store_true", help="print doctor.json to stdout instead of the text report")
    p.add_argument("--quiet", action="store_true", help="no progress")
    add_preprocess_args(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import json
    from pathlib import Path

    from calib.atomic import removing_new_empty_dirs
    from calib.doctor import DoctorOptions, diagnose
    from calib.errors import DetcalError
    from calib.artifact import PostprocessConfig

    pre = preprocess_from_args(args)
    try:
        options = DoctorOptions(conf=args.conf, postprocess=PostprocessConfig(iou_threshold=args.iou, mask_padding=False))
    except ValueError as exc:
        raise DetcalError(str(exc)) from None
    for src in [s for s in (args.model, args.data, args.native_model, args.reference_model) if s]:
        if Path(args.out).exists() and Path(args.out).resolve() == Path(src).resolve():
            raise DetcalError(f"output folder is an input: {args.out}")
    with removing_new_empty_dirs(args.out):            # a failed doctor leaves no empty folder
        report = diagnose(args.model, args.data, split=args.split, serve_size=args.serve_size,
                          native_size=args.native_size, native_model=args.native_model,
                          reference_model=args.reference_model, preprocess=pre,
                          options=options, layout=args.layout, out_dir=args.out, batch_size=args.batch,
                          threads=args.threads, progress=not args.quiet, images_dir=args.images)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
        print(f"\nwrote {Path(args.out) / 'doctor.json'}")
    return report.exit_code
