"""The `detcal` command line: fit, patch, eval, inspect, doctor.

User errors (DetcalError) print one line, `detcal: error: ...`, and exit with code 2.
Anything else is a bug in detcal and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from .errors import DetcalError

DESCRIPTION = """\
Post-hoc calibration and false-positive filtering for exported ONNX object detectors.

  detcal fit    --model M.onnx --data data.yaml --out calibration.json
  detcal patch  --model M.onnx --calibration calibration.json        -> M.detcal.onnx
  detcal eval   --model M.onnx --patched M.detcal.onnx --data data.yaml --split test
  detcal inspect M.onnx                                              (EP op coverage)
"""


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(vals) == 1 and vals[0] > 0:
        return vals[0], vals[0]
    if len(vals) == 2 and all(v > 0 for v in vals):
        return vals[0], vals[1]
    raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")


def _floats3(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return vals


def add_model_data_args(p: argparse.ArgumentParser, *, split_default: str) -> None:
    p.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    p.add_argument("--data", required=True,
                   help="deployment images with labels: an Ultralytics data YAML, an images/ + labels/ folder, or a COCO instances JSON")
    p.add_argument("--split", default=split_default, help=f"dataset split to use from a YAML (default: {split_default})")
    p.add_argument("--layout", choices=["xywh_cls", "xywh_obj_cls", "end2end"],
                   help="override the recognised head layout")
    p.add_argument("--imgsz", type=_size, help="serving size N or HxW (required for models with dynamic height/width)")
    p.add_argument("--batch", type=int, default=8, help="images per model call when the batch axis is dynamic (default: 8)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_preprocess_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing (recorded in the artifact; must match deployment)")
    g.add_argument("--resize", choices=["letterbox", "stretch"], default="letterbox",
                   help="letterbox: keep aspect ratio and pad (Ultralytics, default); stretch: plain resize")
    g.add_argument("--pad-value", type=int, default=114, help="letterbox padding grey level (default: 114)")
    g.add_argument("--channel-order", choices=["RGB", "BGR"], default="RGB", help="channel order the model expects (default: RGB)")
    g.add_argument("--mean", type=_floats3, default=(0.0, 0.0, 0.0), help="per-channel mean in 0..1 units after /255 (default: 0,0,0)")
    g.add_argument("--std", type=_floats3, default=(1.0, 1.0, 1.0), help="per-channel std in 0..1 units after /255 (default: 1,1,1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detcal", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit calibration and rejection thresholds on a validation set",
                         description="Run the raw model over a deployment validation set (positive and negative scenes), "
                                     "match detections to ground truth, fit a monotone calibrator and per-class "
                                     "negative-scene rejection thresholds, and write calibration.json plus a report.")
    add_model_data_args(fit, split_default="val")
    add_preprocess_args(fit)
    fit.add_argument("--out", default="calibration.json", help="artifact path (default: calibration.json); the report goes to <out stem>_report/")
    fit.add_argument("--calibrator", default="auto",
                     choices=["auto", "identity", "temperature", "temperature_per_class", "platt_per_class", "isotonic_per_class"],
                     help="calibrator; auto picks by cross-validated log-loss and never anything worse than identity (default: auto)")
    fit.add_argument("--max-negative-rate", type=float, default=0.01,
                     help="target share of negative images with any surviving detection, certified by a 95%% Clopper-Pearson bound (default: 0.01)")
    fit.add_argument("--operating-point", choices=["baseline", "f1", "max-recall"], default="baseline",
                     help="where thresholds start before negative scenes raise them: baseline = --baseline-conf on the raw "
                          "scale, mapped through the calibrator (keeps today's detections; default); f1 = per-class "
                          "F1-optimal on positive images; max-recall = the lowest thresholds that certify the target")
    fit.add_argument("--confidence", type=float, default=0.95, help="confidence of the upper bound (default: 0.95)")
    fit.add_argument("--match-iou", type=float, default=0.5, help="IoU to count a detection as a true positive (default: 0.5)")
    fit.add_argument("--base-conf", type=float, default=0.001, help="raw score floor for collecting detections (default: 0.001)")
    fit.add_argument("--baseline-conf", type=float, default=0.25, help="the raw operating threshold users run today, for before/after (default: 0.25)")
    fit.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default: 0.7)")
    fit.add_argument("--max-det", type=int, default=300, help="detections kept per image (default: 300)")
    fit.add_argument("--pre-nms-top-k", type=int, default=3000, help="candidates entering NMS (default: 3000, < 3840 for TensorRT)")
    fit.add_argument("--multi-label", action="store_true", help="keep every class of a box above its threshold, not only the best")
    fit.add_argument("--folds", type=int, default=5, help="k for the k-fold (by image) cross-validation of 'after' numbers (default: 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed for the fold split (default: 0)")
    fit.add_argument("--names", help="class names file (one per line) when the dataset has none")

    patch = sub.add_parser("patch", help="insert calibration, masking, thresholds and NMS into the ONNX graph",
                           description="Rewrite the raw exported model so that its outputs are final detections "
                                       "(num_dets, det_boxes, det_scores, det_classes) in original-image pixels.")
    patch.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    patch.add_argument("--calibration", required=True, help="calibration.json from `detcal fit`")
    patch.add_argument("--out", help="output path (default: <model>.detcal.onnx beside the model)")
    patch.add_argument("--iou", type=float, help="override the NMS IoU threshold")
    patch.add_argument("--max-det", type=int, help="override the number of detections per image (K)")
    patch.add_argument("--conf", type=float, help="override every class's score threshold (calibrated scale)")
    patch.add_argument("--force", action="store_true", help="patch even if the model's sha256 differs from the artifact's")

    insp = sub.add_parser("inspect", help="show a model's inputs/outputs and op coverage per execution provider")
    insp.add_argument("model", help="an .onnx file")

    try:
        from .eval_cli import add_eval_parser
        add_eval_parser(sub)
    except ImportError:
        pass
    try:
        from .doctor import add_doctor_parser
        add_doctor_parser(sub)
    except ImportError:
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if args.command == "fit":
            from .fit import run_fit_cli
            return run_fit_cli(args)
        if args.command == "patch":
            from onnx_ops.patch import run_patch_cli
            return run_patch_cli(args)
        if args.command == "inspect":
            from onnx_ops.inspect import main_inspect
            return main_inspect(args.model)
        return args.func(args)
    except DetcalError as exc:
        print(f"detcal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("detcal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
