"""`detcal patch`: the command line over `onnx_ops.patch_model`.

Everything the patch does (the sha256 and layout checks, the gate that refuses inserted nodes
unsupported on the onnxruntime CPU/CUDA providers, the atomic write) is `patch_model`'s; this
module parses, calls it and prints what the patched model's metadata records.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .args import parse_size, positive_int, unit_float


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "patch", help="insert calibration, masking, thresholds and NMS into the ONNX graph",
        description="Rewrite the raw exported model so that its outputs are final detections "
                    "(num_dets, det_boxes, det_scores, det_classes) in original-image pixels.")
    p.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    p.add_argument("--calibration", required=True, help="calibration.json from `detcal fit`")
    p.add_argument("--out", help="output path (default: <model>.detcal.onnx beside the model)")
    p.add_argument("--iou", type=unit_float, help="override the NMS IoU threshold")
    p.add_argument("--max-det", type=positive_int, help="override the number of detections per image (K)")
    p.add_argument("--conf", type=unit_float, help="override every class's score threshold (calibrated scale)")
    p.add_argument("--force", action="store_true", help="patch even if the model's sha256 differs from the artifact's")
    p.add_argument("--static-shapes", action="store_true",
                   help="fixed-shape graph for TensorRT: no NonZero, no data-dependent Slice, TopK with constant K "
                        "(default: chosen automatically, fixed-shape only where TensorRT would leave nodes outside "
                        "the engine; box-aware calibration (platt_box) only on request: its fixed-shape graph "
                        "calibrates every box-class pair, ~20x the default's cost on CPU)")
    e = p.add_argument_group("embedded preprocessing (the model takes the decoded image, no glue code)")
    e.add_argument("--embed-preprocess", action="store_true",
                   help="the patched model takes `image` uint8 [H, W, 3] (any size) and letterboxes, scales "
                        "and lays it out in the graph as the calibration records; boxes in the image's pixels")
    e.add_argument("--input-channel-order", choices=("RGB", "BGR"),
                   help="channel order of the images passed in (default: the calibration's; the other one "
                        "is reversed in the graph)")
    e.add_argument("--frame-size", type=parse_size, metavar="HxW",
                   help="fixed-size video frames instead: `frames` uint8 [B, H, W, 3], the geometry "
                        "folded into constants")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import json
    import warnings

    import onnx

    from onnx_ops import patch_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = patch_model(args.model, args.calibration, args.out, iou=args.iou, max_det=args.max_det,
                          conf=args.conf, force=args.force, embed_preprocess=args.embed_preprocess,
                          input_channel_order=args.input_channel_order, frame_size=args.frame_size,
                          static_shapes=True if getattr(args, "static_shapes", False) else None)
    # from bytes: onnx.load picks its reader by the file's extension (a .json name would be read as JSON)
    model = onnx.load_model_from_string(Path(out).read_bytes())
    meta = {p.key: p.value for p in model.metadata_props}
    s = json.loads(meta["detcal"])
    thr, nms = s["thresholds"], s["nms"]
    print(f"detcal patch: wrote {out}")
    print(f"  head {s['layout']} ({s['num_classes']} classes)"
          f"{', calibration before the Sigmoid' if s['calibration_in_logit_space'] else ''}; "
          f"calibrator {s['calibrator']}; thresholds {min(thr):.3g}..{max(thr):.3g}; "
          f"NMS IoU {nms['iou_threshold']:g}, pre-NMS top-k {nms['pre_nms_top_k']}, max_det {nms['max_det']}; "
          f"{'fixed-shape graph (TensorRT)' if s.get('static_shapes') else 'default graph'}")
    inputs = ", ".join(f"{k} {v}" for k, v in s["inputs"].items())
    if not args.embed_preprocess:
        inputs = f"{model.graph.input[0].name}, {inputs}"
    print(f"  inputs: {inputs}; outputs: {', '.join(o.name for o in model.graph.output)}")
    for w in dict.fromkeys(str(w.message) for w in caught):
        print(f"  note: {w}", file=sys.stderr)
    return 0
