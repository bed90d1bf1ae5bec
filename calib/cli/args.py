"""Argument types and the argument groups shared by several `detcal` commands.

Only argparse here: importing this module must stay cheap (`detcal --help` < 1 s).
"""
from __future__ import annotations

import argparse
import math

# = calib.artifact.LAYOUTS, spelled out so that `detcal --help` imports no numpy (tests/test_head_wiring.py checks)
LAYOUT_CHOICES = ("xywh_cls", "xywh_obj_cls", "end2end", "yolox_raw", "gfl_multilevel", "detr")


def parse_size(text: str) -> tuple[int, int]:
    """`N` or `HxW` (also `H,W`) -> (H, W), both > 0; an argparse error otherwise."""
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


def floats3(text: str) -> tuple[float, float, float]:
    """`a,b,c` -> three floats; an argparse error otherwise."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"expected three comma-separated finite numbers, got {text!r}")
    return vals


def _int_at_least(low: int, kind: str):
    """An argparse type: an integer >= low; an argparse error naming `kind` otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")            # --batch 0 is an error
non_negative_int = _int_at_least(0, "a non-negative integer")    # a seed


def unit_float(text: str) -> float:
    """A finite number in [0, 1] (a score threshold, an IoU, a rate); an argparse error otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:          # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_run_args(p: argparse.ArgumentParser) -> None:
    """--layout, --batch, --threads: how the raw model is run."""
    p.add_argument("--layout", choices=LAYOUT_CHOICES, help="override the recognised head layout")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="images per model call when the batch axis is dynamic (default: 8; 1 for a dynamically "
                        "quantized model, whose scores for an image depend on the rest of its batch)")
    p.add_argument("--threads", type=positive_int, default=None, help="onnxruntime intra-op threads (default: all cores)")


def add_model_data_args(p: argparse.ArgumentParser, *, split_default: str) -> None:
    """--model, --data, --split, --layout, --imgsz, --batch, --threads, --quiet."""
    p.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    p.add_argument("--data", required=True,
                   help="deployment images with labels: an Ultralytics data YAML, an images/ + labels/ folder, a .txt "
                        "list of image paths (YOLO labels), or a COCO instances JSON")
    p.add_argument("--split", default=split_default,
                   help=f"dataset split to use from a YAML or from a folder's images/<split> (default: {split_default})")
    add_images_arg(p)
    p.add_argument("--imgsz", type=parse_size, help="serving size N or HxW (required for models with dynamic height/width)")
    add_run_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_images_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", metavar="DIR",
                   help="COCO JSON only: the folder its file_names are relative to (default: images/ beside the "
                        "JSON, the JSON's folder, or COCO's own annotations/ + <split>/ layout)")


def add_names_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--names", help="class names file (one per line) when the dataset has none")


def add_preprocess_args(p: argparse.ArgumentParser) -> None:
    """--resize, --pad-value, --channel-order, --mean, --std (recorded in the artifact)."""
    g = p.add_argument_group("preprocessing (recorded in the artifact; must match deployment)")
    g.add_argument("--resize", choices=["letterbox", "stretch"], default="letterbox",
                   help="letterbox: keep aspect ratio and pad (Ultralytics, default); stretch: plain resize")
    g.add_argument("--pad-value", type=int, default=114, help="letterbox padding grey level (default: 114)")
    g.add_argument("--channel-order", choices=["RGB", "BGR"], default="RGB", help="channel order the model expects (default: RGB)")
    g.add_argument("--mean", type=floats3, default=(0.0, 0.0, 0.0),
                   help="per-channel mean, in 0..1 units after /255 (0..255 units with --scale none) (default: 0,0,0)")
    g.add_argument("--std", type=floats3, default=(1.0, 1.0, 1.0),
                   help="per-channel std, in the same units as --mean (default: 1,1,1)")
    g.add_argument("--placement", choices=["centre", "top_left", "bottom_right"], default="centre",
                   help="where the letterbox puts the image: centre (Ultralytics, default), top_left (YOLOX)")
    g.add_argument("--scale", choices=["div255", "none"], default="div255",
                   help="div255: pixels / 255 before mean/std (default); none: raw 0..255 values (YOLOX)")


def preprocess_from_args(args):
    """The Preprocess the preprocessing group describes (a DetcalError for an invalid one)."""
    from calib.errors import DetcalError
    from calib.artifact import Preprocess

    try:
        return Preprocess(args.resize, args.pad_value, args.channel_order, tuple(args.mean), tuple(args.std),
                          getattr(args, "placement", "centre"), getattr(args, "scale", "div255"))
    except ValueError as exc:
        raise DetcalError(str(exc)) from None
